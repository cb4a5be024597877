//! Endpoints TIM does not offer at all: A_26262 (the legacy media configuration), A_26344 (URL
//! previews), A_26520 / A_28590 (the room directory over federation) and the disabled
//! login-token endpoint (`get_token-disabled`, reference behaviour).
//!
//! One rule shape for all of them, with the data in `blocked_endpoints.tsv`: the endpoint
//! template, the rule id and the answer. They are refused for every method and every caller,
//! before any authentication, so nothing about them reaches the homeserver.

use std::sync::LazyLock;

use http::StatusCode;

use super::data::{self, DataError};
use crate::error::MatrixError;

const FILE: &str = "blocked_endpoints.tsv";
const TSV: &str = include_str!("blocked_endpoints.tsv");
const COLUMNS: [&str; 6] = ["template", "rule", "status", "errcode", "error", "why"];

/// One endpoint that is not offered, and how it is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub template: &'static str,
    pub rule: &'static str,
    pub status: StatusCode,
    pub errcode: &'static str,
    pub error: &'static str,
}

impl Block {
    pub fn matrix_error(&self) -> MatrixError {
        MatrixError::new(self.status, self.errcode, self.error, self.rule)
    }
}

fn parse() -> Result<Vec<Block>, DataError> {
    data::rows(FILE, TSV, &COLUMNS)?
        .into_iter()
        .map(|row| {
            let [template, rule, status, errcode, error, _why] = row.cells[..] else {
                return Err(row.error(FILE, "wrong number of cells"));
            };
            let status = status
                .parse::<u16>()
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .filter(|s| s.is_client_error())
                .ok_or_else(|| row.error(FILE, format!("`{status}` is not a 4xx status")))?;
            if !errcode.starts_with("M_") {
                return Err(row.error(FILE, format!("`{errcode}` is not a Matrix errcode")));
            }
            Ok(Block {
                template,
                rule,
                status,
                errcode,
                error,
            })
        })
        .collect()
}

static TABLE: LazyLock<Result<Vec<Block>, DataError>> = LazyLock::new(parse);

/// The whole table, or why it cannot be read (the listeners refuse to start then).
pub fn table() -> Result<&'static [Block], &'static DataError> {
    TABLE.as_deref()
}

/// The refusal for `template`, if TIM does not offer it. Should the table ever be unreadable,
/// every endpoint is refused: running without these blocks would let them through.
pub fn blocked_endpoint(template: &str) -> Option<MatrixError> {
    match table() {
        Ok(blocks) => blocks
            .iter()
            .find(|b| b.template == template)
            .map(Block::matrix_error),
        Err(e) => Some(MatrixError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            format!("internal: policy table unreadable: {e}"),
            "policy-table",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_loads_and_every_template_is_a_v1_11_endpoint() {
        let blocks = table().unwrap();
        assert_eq!(blocks.len(), 5);
        let endpoints = crate::matrix::endpoints::v1_11();
        for block in blocks {
            assert!(
                endpoints.iter().any(|e| e.template == block.template),
                "{} is not in the v1.11 table",
                block.template
            );
        }
    }

    #[test]
    fn blocked_endpoints_carry_their_rule_ids_and_answers() {
        let media = blocked_endpoint("/_matrix/media/v3/config").unwrap();
        assert_eq!(
            (media.status.as_u16(), media.errcode, media.rule),
            (404, "M_UNRECOGNIZED", "A_26262")
        );
        assert_eq!(
            blocked_endpoint("/_matrix/client/v1/media/preview_url")
                .unwrap()
                .rule,
            "A_26344"
        );
        assert_eq!(
            blocked_endpoint("/_matrix/client/v1/login/get_token")
                .unwrap()
                .rule,
            "get_token-disabled"
        );
        let fed = blocked_endpoint("/_matrix/federation/v1/publicRooms").unwrap();
        assert_eq!(
            (fed.status.as_u16(), fed.error.as_str(), fed.rule),
            (403, "A_26520, A_28590", "A_26520/A_28590")
        );
        assert!(blocked_endpoint("/_matrix/client/v3/publicRooms").is_none());
    }
}
