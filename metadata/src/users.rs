//! SCRAM credentials, in `users/scram/{user}/{mechanism}`.
//!
//! Only what RFC 5802 lets a server keep is stored: the salt, the iteration
//! count, StoredKey and ServerKey. Neither the password nor the salted
//! password can be recovered from them, and a reader of etcd cannot
//! authenticate with them either (that needs the ClientKey).

use serde::{Deserialize, Serialize};

use crate::{decode, encode, escape_group, unescape_group, MetadataError, MetadataStore, Write};

/// One user's credential for one SCRAM mechanism.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScramCredentialRecord {
    pub salt: Vec<u8>,
    pub iterations: u32,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
}

/// A change to the stored credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialChange {
    Upsert {
        user: String,
        mechanism: String,
        credential: ScramCredentialRecord,
    },
    Delete {
        user: String,
        mechanism: String,
    },
}

impl MetadataStore {
    fn scram_prefix(&self) -> String {
        format!("{}users/scram/", self.root)
    }

    fn scram_key(&self, user: &str, mechanism: &str) -> String {
        // User names are free text (Kafka allows any), so they are escaped
        // like group ids.
        format!("{}{}/{mechanism}", self.scram_prefix(), escape_group(user))
    }

    pub async fn scram_credential(
        &self,
        user: &str,
        mechanism: &str,
    ) -> Result<Option<ScramCredentialRecord>, MetadataError> {
        let key = self.scram_key(user, mechanism);
        match self
            .kv
            .get_prefix(&key)
            .await?
            .iter()
            .find(|kv| kv.key == key)
        {
            Some(kv) => Ok(Some(decode(kv)?)),
            None => Ok(None),
        }
    }

    /// Every stored credential as (user, mechanism, iterations), sorted.
    pub async fn list_scram_credentials(
        &self,
    ) -> Result<Vec<(String, String, u32)>, MetadataError> {
        let prefix = self.scram_prefix();
        let mut out = Vec::new();
        for kv in self.kv.get_prefix(&prefix).await? {
            let Some((user, mechanism)) = kv
                .key
                .strip_prefix(&prefix)
                .and_then(|rest| rest.rsplit_once('/'))
            else {
                continue;
            };
            let record: ScramCredentialRecord = decode(&kv)?;
            out.push((
                unescape_group(user),
                mechanism.to_string(),
                record.iterations,
            ));
        }
        out.sort();
        Ok(out)
    }

    /// Applies `changes`, up to etcd's transaction size at a time.
    pub async fn alter_scram_credentials(
        &self,
        changes: &[CredentialChange],
    ) -> Result<(), MetadataError> {
        for chunk in changes.chunks(crate::MAX_TXN_OPS) {
            self.alter_scram_chunk(chunk).await?;
        }
        Ok(())
    }

    async fn alter_scram_chunk(&self, changes: &[CredentialChange]) -> Result<(), MetadataError> {
        let writes = changes
            .iter()
            .map(|change| match change {
                CredentialChange::Upsert {
                    user,
                    mechanism,
                    credential,
                } => Write::Put(self.scram_key(user, mechanism), encode(credential)),
                CredentialChange::Delete { user, mechanism } => {
                    Write::Delete(self.scram_key(user, mechanism))
                }
            })
            .collect();
        self.kv.txn(Vec::new(), writes).await.map(|_| ())
    }

    /// Stores `credential` unless the user already has one for `mechanism`:
    /// a bootstrap credential never overwrites one an administrator changed.
    /// True when it was stored.
    pub async fn create_scram_credential(
        &self,
        user: &str,
        mechanism: &str,
        credential: &ScramCredentialRecord,
    ) -> Result<bool, MetadataError> {
        let key = self.scram_key(user, mechanism);
        self.kv
            .txn(
                vec![crate::Compare::Absent(key.clone())],
                vec![Write::Put(key, encode(credential))],
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::FileKv;

    fn credential(iterations: u32) -> ScramCredentialRecord {
        ScramCredentialRecord {
            salt: vec![1, 2, 3],
            iterations,
            stored_key: vec![4; 32],
            server_key: vec![5; 32],
        }
    }

    #[tokio::test]
    async fn credentials_are_stored_listed_and_deleted_per_mechanism() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        // A name with the characters keys use as separators.
        let odd = "team/a%b";
        store
            .alter_scram_credentials(&[
                CredentialChange::Upsert {
                    user: odd.into(),
                    mechanism: "SCRAM-SHA-256".into(),
                    credential: credential(4096),
                },
                CredentialChange::Upsert {
                    user: "alice".into(),
                    mechanism: "SCRAM-SHA-512".into(),
                    credential: credential(8192),
                },
            ])
            .await
            .unwrap();
        assert_eq!(
            store.list_scram_credentials().await.unwrap(),
            vec![
                ("alice".into(), "SCRAM-SHA-512".into(), 8192),
                (odd.into(), "SCRAM-SHA-256".into(), 4096),
            ]
        );
        assert_eq!(
            store.scram_credential(odd, "SCRAM-SHA-256").await.unwrap(),
            Some(credential(4096))
        );
        assert_eq!(
            store.scram_credential(odd, "SCRAM-SHA-512").await.unwrap(),
            None
        );
        // "alice" must not match a user whose name extends it.
        assert_eq!(
            store
                .scram_credential("alic", "SCRAM-SHA-512")
                .await
                .unwrap(),
            None
        );

        assert!(!store
            .create_scram_credential("alice", "SCRAM-SHA-512", &credential(1))
            .await
            .unwrap());
        assert!(store
            .create_scram_credential("bob", "SCRAM-SHA-512", &credential(1))
            .await
            .unwrap());
        store
            .alter_scram_credentials(&[CredentialChange::Delete {
                user: "alice".into(),
                mechanism: "SCRAM-SHA-512".into(),
            }])
            .await
            .unwrap();
        assert_eq!(
            store
                .scram_credential("alice", "SCRAM-SHA-512")
                .await
                .unwrap(),
            None
        );
        assert_eq!(store.list_scram_credentials().await.unwrap().len(), 2);
    }
}
