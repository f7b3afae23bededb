//! SCRAM credentials, in `users/scram/{user}/{mechanism}`.
//!
//! Only what RFC 5802 lets a server keep is stored: the salt, the iteration
//! count, StoredKey and ServerKey. Neither the password nor the salted
//! password can be recovered from them, and a reader of etcd cannot
//! authenticate with them either (that needs the ClientKey).
//!
//! A credential the operator created for a KafscaleUser also has a mark in
//! `users-owners/scram/{user}/{mechanism}` naming that resource (outside
//! `users/scram/`, which brokers read). The operator changes and removes
//! only credentials it marked; AlterUserScramCredentials (an administrator)
//! clears the mark of every credential it writes or deletes.

use serde::{Deserialize, Serialize};

use crate::acls::{Owner, OwnerMark};
use crate::{
    decode, encode, escape_group, unescape_group, Compare, MetadataError, MetadataStore, Write,
};

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

/// One stored credential of a user, with what the operator needs to decide
/// whether it may touch it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredScram {
    pub mechanism: String,
    pub credential: ScramCredentialRecord,
    /// The revision the credential was last written at.
    pub revision: i64,
    /// Its ownership mark, if the operator created it.
    pub mark: Option<OwnerMark>,
}

/// What an operator's write of a credential expects to find, so that a
/// concurrent change by an administrator makes it write nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScramExpect {
    /// No credential for this user and mechanism.
    Absent,
    /// The credential as last written at this revision.
    CredentialAt(i64),
    /// The ownership mark as last written at this revision.
    MarkAt(i64),
}

impl MetadataStore {
    fn scram_prefix(&self) -> String {
        format!("{}users/scram/", self.root)
    }

    fn scram_owners_prefix(&self) -> String {
        format!("{}users-owners/scram/", self.root)
    }

    fn scram_key(&self, user: &str, mechanism: &str) -> String {
        // User names are free text (Kafka allows any), so they are escaped
        // like group ids.
        format!("{}{}/{mechanism}", self.scram_prefix(), escape_group(user))
    }

    fn scram_owner_key(&self, user: &str, mechanism: &str) -> String {
        format!(
            "{}{}/{mechanism}",
            self.scram_owners_prefix(),
            escape_group(user)
        )
    }

    fn scram_compare(&self, user: &str, mechanism: &str, expect: ScramExpect) -> Compare {
        match expect {
            ScramExpect::Absent => Compare::Absent(self.scram_key(user, mechanism)),
            ScramExpect::CredentialAt(rev) => {
                Compare::ModRevision(self.scram_key(user, mechanism), rev)
            }
            ScramExpect::MarkAt(rev) => {
                Compare::ModRevision(self.scram_owner_key(user, mechanism), rev)
            }
        }
    }

    /// Every credential `user` has, each with its revision and ownership
    /// mark, sorted by mechanism.
    pub async fn user_scram_credentials(
        &self,
        user: &str,
    ) -> Result<Vec<StoredScram>, MetadataError> {
        // The trailing '/' keeps "alice" from matching "alice2".
        let owners_prefix = format!("{}{}/", self.scram_owners_prefix(), escape_group(user));
        let mut marks = std::collections::HashMap::new();
        for kv in self.kv.get_prefix(&owners_prefix).await? {
            let owner: Owner = decode(&kv)?;
            if let Some(mechanism) = kv.key.strip_prefix(&owners_prefix) {
                marks.insert(
                    mechanism.to_string(),
                    OwnerMark {
                        owner,
                        revision: kv.mod_revision,
                    },
                );
            }
        }
        let prefix = format!("{}{}/", self.scram_prefix(), escape_group(user));
        let mut out = Vec::new();
        for kv in self.kv.get_prefix(&prefix).await? {
            let Some(mechanism) = kv.key.strip_prefix(&prefix) else {
                continue;
            };
            out.push(StoredScram {
                mechanism: mechanism.to_string(),
                credential: decode(&kv)?,
                revision: kv.mod_revision,
                mark: marks.remove(mechanism),
            });
        }
        out.sort_by(|a, b| a.mechanism.cmp(&b.mechanism));
        Ok(out)
    }

    /// Stores `credential` marked as `owner`'s if the stored state is what
    /// `expect` says; true when it was stored.
    pub async fn put_owned_scram_credential(
        &self,
        user: &str,
        mechanism: &str,
        credential: &ScramCredentialRecord,
        owner: &Owner,
        expect: ScramExpect,
    ) -> Result<bool, MetadataError> {
        self.kv
            .txn(
                vec![self.scram_compare(user, mechanism, expect)],
                vec![
                    Write::Put(self.scram_key(user, mechanism), encode(credential)),
                    Write::Put(self.scram_owner_key(user, mechanism), encode(owner)),
                ],
            )
            .await
    }

    /// Removes a credential and its mark if the stored state is what
    /// `expect` says; true when it was removed.
    pub async fn delete_owned_scram_credential(
        &self,
        user: &str,
        mechanism: &str,
        expect: ScramExpect,
    ) -> Result<bool, MetadataError> {
        self.kv
            .txn(
                vec![self.scram_compare(user, mechanism, expect)],
                vec![
                    Write::Delete(self.scram_key(user, mechanism)),
                    Write::Delete(self.scram_owner_key(user, mechanism)),
                ],
            )
            .await
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

    /// Applies an administrator's `changes`, up to etcd's transaction size
    /// at a time. Each changed credential is the administrator's from then
    /// on: its ownership mark goes in the same transaction.
    pub async fn alter_scram_credentials(
        &self,
        changes: &[CredentialChange],
    ) -> Result<(), MetadataError> {
        for chunk in changes.chunks(crate::MAX_TXN_OPS / 2) {
            self.alter_scram_chunk(chunk).await?;
        }
        Ok(())
    }

    async fn alter_scram_chunk(&self, changes: &[CredentialChange]) -> Result<(), MetadataError> {
        let writes = changes
            .iter()
            .flat_map(|change| match change {
                CredentialChange::Upsert {
                    user,
                    mechanism,
                    credential,
                } => [
                    Write::Put(self.scram_key(user, mechanism), encode(credential)),
                    Write::Delete(self.scram_owner_key(user, mechanism)),
                ],
                CredentialChange::Delete { user, mechanism } => [
                    Write::Delete(self.scram_key(user, mechanism)),
                    Write::Delete(self.scram_owner_key(user, mechanism)),
                ],
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
                vec![Compare::Absent(key.clone())],
                vec![
                    Write::Put(key, encode(credential)),
                    // A mark left without its credential must not make
                    // this one the operator's.
                    Write::Delete(self.scram_owner_key(user, mechanism)),
                ],
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

    #[tokio::test]
    async fn operator_credentials_carry_a_mark_that_administrators_writes_clear() {
        let dir = tempfile::tempdir().unwrap();
        let store = MetadataStore::new(
            Arc::new(FileKv::open(dir.path().join("m.json")).unwrap()),
            "c",
        );
        let owner = Owner {
            kind: "KafscaleUser".into(),
            namespace: "ns".into(),
            name: "app".into(),
        };
        const M: &str = "SCRAM-SHA-512";
        // Refused when a credential exists (an administrator's, here).
        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: "legacy".into(),
                mechanism: M.into(),
                credential: credential(4096),
            }])
            .await
            .unwrap();
        assert!(!store
            .put_owned_scram_credential("legacy", M, &credential(1), &owner, ScramExpect::Absent)
            .await
            .unwrap());
        let legacy = store.user_scram_credentials("legacy").await.unwrap();
        assert_eq!(legacy.len(), 1);
        assert_eq!(
            (legacy[0].credential.iterations, &legacy[0].mark),
            (4096, &None)
        );

        assert!(store
            .put_owned_scram_credential("app", M, &credential(8192), &owner, ScramExpect::Absent)
            .await
            .unwrap());
        // "app" must not see the marks or credentials of "app2".
        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: "app2".into(),
                mechanism: M.into(),
                credential: credential(4096),
            }])
            .await
            .unwrap();
        let app = store.user_scram_credentials("app").await.unwrap();
        assert_eq!(app.len(), 1);
        let mark = app[0].mark.clone().unwrap();
        assert_eq!(mark.owner, owner);
        // Brokers read it as any credential.
        assert_eq!(
            store.scram_credential("app", M).await.unwrap(),
            Some(credential(8192))
        );

        // A stale expectation writes and removes nothing.
        assert!(!store
            .delete_owned_scram_credential("app", M, ScramExpect::MarkAt(mark.revision + 1000))
            .await
            .unwrap());
        assert!(!store
            .delete_owned_scram_credential("legacy", M, ScramExpect::MarkAt(legacy[0].revision))
            .await
            .unwrap());
        assert!(store.scram_credential("legacy", M).await.unwrap().is_some());

        // An administrator's change of the password makes it theirs.
        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: "app".into(),
                mechanism: M.into(),
                credential: credential(4096),
            }])
            .await
            .unwrap();
        assert_eq!(
            store.user_scram_credentials("app").await.unwrap()[0].mark,
            None
        );
        assert!(!store
            .delete_owned_scram_credential("app", M, ScramExpect::MarkAt(mark.revision))
            .await
            .unwrap());

        // Adopting (the credential as read) marks it; removing it then
        // takes credential and mark.
        let rev = store.user_scram_credentials("app").await.unwrap()[0].revision;
        assert!(store
            .put_owned_scram_credential(
                "app",
                M,
                &credential(4096),
                &owner,
                ScramExpect::CredentialAt(rev)
            )
            .await
            .unwrap());
        let mark = store.user_scram_credentials("app").await.unwrap()[0]
            .mark
            .clone()
            .unwrap();
        assert!(store
            .delete_owned_scram_credential("app", M, ScramExpect::MarkAt(mark.revision))
            .await
            .unwrap());
        assert!(store
            .user_scram_credentials("app")
            .await
            .unwrap()
            .is_empty());
        // No mark survives its credential: a bootstrap credential made
        // later under the name is nobody's.
        assert!(store
            .create_scram_credential("app", M, &credential(1))
            .await
            .unwrap());
        assert_eq!(
            store.user_scram_credentials("app").await.unwrap()[0].mark,
            None
        );
    }
}
