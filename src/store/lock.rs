//! Named locks so that with several replicas only one runs each background job (federation
//! refresh, raw-data sender, room cleanup).
//!
//! PostgreSQL: a session-level `pg_try_advisory_lock` on a connection taken out of the pool
//! and held by the guard; if the process dies the session ends and PostgreSQL releases the
//! lock. SQLite is single-process by design, so an in-process set of held names suffices.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};
use sqlx::Postgres;
use sqlx::pool::PoolConnection;

use super::{Backend, Store, StoreError};

/// Names held by SQLite stores of this process, keyed by database URL and lock name.
static LOCAL_LOCKS: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Default::default);

/// A held lock; released by [`LockGuard::release`] or, best effort, on drop.
#[derive(Debug)]
pub struct LockGuard {
    name: String,
    held: Held,
}

#[derive(Debug)]
enum Held {
    Local(String),
    Postgres {
        conn: Option<PoolConnection<Postgres>>,
        key: i64,
    },
}

/// Stable 64-bit advisory-lock key of a name (the same in every replica and version).
fn advisory_key(name: &str) -> i64 {
    let digest = Sha256::digest(format!("timproxy:{name}").as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(bytes)
}

impl Store {
    /// Take the lock `name` if nobody holds it; `None` when another holder has it.
    pub async fn try_lock(&self, name: &str) -> Result<Option<LockGuard>, StoreError> {
        match self.backend() {
            Backend::Sqlite(_) => {
                let key = format!("{}\u{0}{name}", self.display_url());
                let mut held = LOCAL_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
                if held.insert(key.clone()) {
                    Ok(Some(LockGuard {
                        name: name.to_owned(),
                        held: Held::Local(key),
                    }))
                } else {
                    Ok(None)
                }
            }
            Backend::Postgres(pool) => {
                let key = advisory_key(name);
                let mut conn = pool.acquire().await?;
                let (got,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
                    .bind(key)
                    .fetch_one(&mut *conn)
                    .await?;
                if got {
                    Ok(Some(LockGuard {
                        name: name.to_owned(),
                        held: Held::Postgres {
                            conn: Some(conn),
                            key,
                        },
                    }))
                } else {
                    Ok(None)
                }
            }
        }
    }
}

impl LockGuard {
    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Release the lock now (preferred over drop: the next holder can start at once).
    pub async fn release(mut self) -> Result<(), StoreError> {
        match &mut self.held {
            Held::Local(key) => {
                remove_local(key);
                Ok(())
            }
            Held::Postgres { conn, key } => {
                let Some(mut conn) = conn.take() else {
                    return Ok(());
                };
                let result = sqlx::query("SELECT pg_advisory_unlock($1)")
                    .bind(*key)
                    .execute(&mut *conn)
                    .await;
                if result.is_err() {
                    // Closing the session releases every advisory lock it holds.
                    conn.close_on_drop();
                }
                result.map(|_| ()).map_err(StoreError::from)
            }
        }
    }
}

fn remove_local(key: &str) {
    let mut held = LOCAL_LOCKS.lock().unwrap_or_else(|p| p.into_inner());
    held.remove(key);
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        match &mut self.held {
            Held::Local(key) => remove_local(key),
            Held::Postgres { conn, key } => {
                let Some(mut conn) = conn.take() else {
                    return;
                };
                let key = *key;
                match tokio::runtime::Handle::try_current() {
                    Ok(handle) => {
                        handle.spawn(async move {
                            let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
                                .bind(key)
                                .execute(&mut *conn)
                                .await;
                            if unlocked.is_err() {
                                conn.close_on_drop();
                            }
                        });
                    }
                    Err(_) => conn.close_on_drop(),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advisory_keys_are_stable_and_distinct() {
        assert_eq!(advisory_key("cleanup"), advisory_key("cleanup"));
        assert_ne!(advisory_key("cleanup"), advisory_key("rawdata-sender"));
    }
}
