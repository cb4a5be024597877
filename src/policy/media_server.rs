//! A_26328: media addressed by `{serverName}` is served only for federated servers (and the
//! own server).

use crate::error::MatrixError;
use crate::federation::list::Membership;

pub const RULE: &str = "A_26328";

/// Decide from the federation membership of `server_name`.
pub fn check_media_server(server_name: &str, membership: &Membership) -> Result<(), MatrixError> {
    match membership {
        Membership::Member { .. } => Ok(()),
        Membership::NotMember | Membership::Unavailable(_) => Err(MatrixError::forbidden(
            format!("{server_name} kann nicht in der Föderation gefunden werden"),
            RULE,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unfederated_media_server_refused_fail_closed() {
        assert!(
            check_media_server(
                "a",
                &Membership::Member {
                    is_insurance: false
                }
            )
            .is_ok()
        );
        let err = check_media_server("unfederated.example", &Membership::NotMember).unwrap_err();
        assert_eq!(
            err.error,
            "unfederated.example kann nicht in der Föderation gefunden werden"
        );
        assert!(check_media_server("x", &Membership::Unavailable("expired".into())).is_err());
    }
}
