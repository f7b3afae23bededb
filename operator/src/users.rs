//! The `KafscaleUser` reconciler: the user's SCRAM credential (its password
//! in a Secret the operator writes) or certificate principal, and its ACL
//! bindings, kept in the cluster's etcd, where every broker reads them.
//! Deleting the user removes both (a finalizer).
//!
//! Ownership: the operator changes and removes only what it created for
//! the user, marked as such in etcd beside the records brokers read (see
//! `kafscale_metadata::acls` and `::users`). A binding of the user's
//! principal made with kafka-acls, or a SCRAM user of the same name made
//! with kafka-configs, is never changed or removed; the latter makes the
//! KafscaleUser report `UserExists` instead of taking the name over.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kafscale_metadata::acls::{
    Operation, Owner, PatternType, Permission, ResourceType, StoredAcl, CLUSTER_NAME,
};
use kafscale_metadata::scram::{random_bytes, ScramMechanism, MIN_ITERATIONS};
use kafscale_metadata::users::{ScramExpect, StoredScram};
use kafscale_metadata::{AclRecord, MetadataStore, ScramCredentialRecord};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as FinalizerEvent};
use kube::{Resource, ResourceExt};

use crate::controller::{
    announce, apply, apply_status, condition, same_conditions, Context, Error,
};
use crate::crd::{
    AclOperationName, AclPatternType, AclResourceType, AclRuleType, AuthenticationType,
    KafscaleCluster, KafscaleUser, KafscaleUserStatus,
};

pub const USER_FINALIZER: &str = "kafscale.io/user";
const MECHANISM: ScramMechanism = ScramMechanism::Sha512;

/// The principal's name the brokers see for this user (without `User:`).
pub fn principal_name(u: &KafscaleUser) -> String {
    let name = u.name_any();
    match u.spec.authentication.type_ {
        AuthenticationType::ScramSha512 => name,
        AuthenticationType::TlsExternal => format!("CN={name}"),
    }
}

fn operation(o: AclOperationName) -> Operation {
    match o {
        AclOperationName::All => Operation::All,
        AclOperationName::Read => Operation::Read,
        AclOperationName::Write => Operation::Write,
        AclOperationName::Create => Operation::Create,
        AclOperationName::Delete => Operation::Delete,
        AclOperationName::Alter => Operation::Alter,
        AclOperationName::Describe => Operation::Describe,
        AclOperationName::ClusterAction => Operation::ClusterAction,
        AclOperationName::DescribeConfigs => Operation::DescribeConfigs,
        AclOperationName::AlterConfigs => Operation::AlterConfigs,
        AclOperationName::IdempotentWrite => Operation::IdempotentWrite,
    }
}

/// The bindings the spec asks for, or why it cannot be stored.
pub fn desired_acls(u: &KafscaleUser) -> Result<BTreeSet<AclRecord>, String> {
    let principal = format!("User:{}", principal_name(u));
    let mut out = BTreeSet::new();
    for (i, rule) in u
        .spec
        .authorization
        .iter()
        .flat_map(|a| &a.acls)
        .enumerate()
    {
        let resource_type = match rule.resource.type_ {
            AclResourceType::Topic => ResourceType::Topic,
            AclResourceType::Group => ResourceType::Group,
            AclResourceType::Cluster => ResourceType::Cluster,
            AclResourceType::TransactionalId => ResourceType::TransactionalId,
        };
        let name = match (resource_type, &rule.resource.name) {
            (ResourceType::Cluster, _) => CLUSTER_NAME.to_string(),
            (_, Some(n)) if !n.is_empty() => n.clone(),
            _ => {
                return Err(format!(
                    "acls[{i}]: a {:?} resource needs a name ('*' for all)",
                    rule.resource.type_
                ))
            }
        };
        let pattern = match rule.resource.pattern_type {
            AclPatternType::Literal => PatternType::Literal,
            AclPatternType::Prefix if name == "*" => {
                return Err(format!(
                    "acls[{i}]: '*' is a literal name; drop patternType: prefix"
                ))
            }
            AclPatternType::Prefix => PatternType::Prefixed,
        };
        let permission = match rule.type_ {
            AclRuleType::Allow => Permission::Allow,
            AclRuleType::Deny => Permission::Deny,
        };
        for op in &rule.operations {
            out.insert(AclRecord {
                resource_type: resource_type.code(),
                resource_name: name.clone(),
                pattern_type: pattern.code(),
                principal: principal.clone(),
                host: rule.host.clone(),
                operation: operation(*op).code(),
                permission: permission.code(),
            });
        }
    }
    Ok(out)
}

/// The mark the operator keeps beside each binding and credential it
/// creates for `u`.
pub fn owner_of(u: &KafscaleUser) -> Owner {
    Owner {
        kind: "KafscaleUser".into(),
        namespace: u.namespace().unwrap_or_else(|| "default".into()),
        name: u.name_any(),
    }
}

/// What a reconcile does to the cluster's bindings for one KafscaleUser.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct AclPlan {
    /// Wanted and not stored: created, marked as the user's.
    pub create: Vec<AclRecord>,
    /// Marked as the user's and no longer wanted, with the mark's revision.
    pub delete: Vec<(AclRecord, i64)>,
    /// Wanted and already stored without the user's mark (an
    /// administrator's): kept, never marked, so never removed by the
    /// operator.
    pub not_ours: Vec<AclRecord>,
}

/// Brings the user's own bindings to `desired`. Only bindings carrying
/// `owner`'s mark are ever removed: an administrator's binding for the
/// same principal (a DENY cutting the user off, say), one made by an older
/// operator without marks, or another principal's, is never touched.
pub fn acl_changes(stored: &[StoredAcl], owner: &Owner, desired: &BTreeSet<AclRecord>) -> AclPlan {
    let mut plan = AclPlan::default();
    let present: BTreeSet<&AclRecord> = stored.iter().map(|s| &s.acl).collect();
    plan.create = desired
        .iter()
        .filter(|a| !present.contains(a))
        .cloned()
        .collect();
    for s in stored {
        let ours = s.mark.as_ref().filter(|m| &m.owner == owner);
        match (ours, desired.contains(&s.acl)) {
            // Regardless of principal: a user whose authentication type
            // changed leaves its old principal's bindings behind otherwise.
            (Some(m), false) => plan.delete.push((s.acl.clone(), m.revision)),
            (None, true) => plan.not_ours.push(s.acl.clone()),
            _ => {}
        }
    }
    plan
}

/// What a reconcile does with the SCRAM credential of the user's name.
#[derive(Debug, PartialEq, Eq)]
pub enum ScramStep {
    /// Nothing stored under the name: create it, marked as the user's.
    Create,
    /// The user's own and it agrees with the Secret's password.
    Keep,
    /// The user's own, but the Secret's password changed (or the Secret is
    /// new): derive it again, if the mark is still the one read.
    Rederive { mark_revision: i64 },
    /// Unmarked, but the Secret's password opens it: an operator from
    /// before ownership marks created it. Mark it as the user's. (Whoever
    /// can read the Secret can log in as the user already, so taking it
    /// gives nobody anything new.)
    Adopt { revision: i64 },
    /// Somebody else's (made with kafka-configs, a bootstrap user, another
    /// resource's): leave it, and the user's ACLs, alone. The mechanisms
    /// are those of the credentials in the way.
    Refuse { mechanisms: Vec<String> },
}

/// Decides from the credentials stored for the user's name (each with its
/// mark) and whether the Secret's password opens the SCRAM-SHA-512 one.
pub fn scram_step(stored: &[StoredScram], owner: &Owner, secret_matches: bool) -> ScramStep {
    let ours = |s: &StoredScram| s.mark.as_ref().is_some_and(|m| &m.owner == owner);
    let adoptable =
        |s: &StoredScram| s.mechanism == MECHANISM.name() && s.mark.is_none() && secret_matches;
    // Any other mechanism counts too: it authenticates the same principal.
    let in_the_way: Vec<String> = stored
        .iter()
        .filter(|s| !ours(s) && !adoptable(s))
        .map(|s| s.mechanism.clone())
        .collect();
    if !in_the_way.is_empty() {
        return ScramStep::Refuse {
            mechanisms: in_the_way,
        };
    }
    match stored.iter().find(|s| s.mechanism == MECHANISM.name()) {
        None => ScramStep::Create,
        Some(s) => match &s.mark {
            None => ScramStep::Adopt {
                revision: s.revision,
            },
            Some(_) if secret_matches => ScramStep::Keep,
            Some(m) => ScramStep::Rederive {
                mark_revision: m.revision,
            },
        },
    }
}

/// What the status says when the name belongs to a SCRAM user made
/// outside this KafscaleUser.
pub fn user_exists_message(name: &str, mechanisms: &[String]) -> String {
    format!(
        "a SCRAM user '{name}' already exists in the cluster, created outside this KafscaleUser; \
         delete it with kafka-configs --alter --delete-config {} --entity-type users \
         --entity-name {name}, or name the KafscaleUser differently",
        mechanisms.join(",")
    )
}

fn secret_password(secret: &Secret) -> Option<String> {
    let bytes = secret.data.as_ref()?.get("password")?;
    String::from_utf8(bytes.0.clone())
        .ok()
        .filter(|p| !p.is_empty())
}

/// The Secret a SCRAM user's clients mount: the password and a ready
/// `sasl.jaas.config` for Java clients.
pub fn credential_secret(u: &KafscaleUser, password: &str) -> Secret {
    let name = u.name_any();
    let jaas = format!(
        "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{name}\" password=\"{password}\";"
    );
    let data = [
        ("username", name.clone()),
        ("password", password.to_string()),
        ("sasl.jaas.config", jaas),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.into_bytes())))
    .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: u.namespace(),
            labels: Some(
                [
                    (
                        "app.kubernetes.io/managed-by".to_string(),
                        "kafscale-operator".to_string(),
                    ),
                    ("kafscale.io/user".to_string(), u.name_any()),
                ]
                .into(),
            ),
            owner_references: u.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

pub async fn reconcile_user(u: Arc<KafscaleUser>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.metrics
        .reconciles
        .get_or_create(&crate::metrics::KindLabels {
            kind: "KafscaleUser",
        })
        .inc();
    let ns = u.namespace().unwrap_or_else(|| "default".into());
    let api: Api<KafscaleUser> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, USER_FINALIZER, u, |event| async {
        match event {
            FinalizerEvent::Apply(u) => apply_user(&u, &ctx, &api).await,
            FinalizerEvent::Cleanup(u) => cleanup_user(&u, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(other.to_string()),
    })
}

async fn cluster_of(u: &KafscaleUser, ctx: &Context) -> Result<Option<KafscaleCluster>, Error> {
    let ns = u.namespace().unwrap_or_else(|| "default".into());
    let clusters: Api<KafscaleCluster> = Api::namespaced(ctx.client.clone(), &ns);
    Ok(clusters.get_opt(&u.spec.cluster_ref).await?)
}

async fn set_status(
    ctx: &Context,
    api: &Api<KafscaleUser>,
    u: &KafscaleUser,
    ok: bool,
    reason: &str,
    message: String,
    secret: Option<String>,
) -> Result<(), Error> {
    let old = u.status.clone().unwrap_or_default();
    let status = KafscaleUserStatus {
        conditions: vec![condition(
            &old.conditions,
            "Ready",
            ok,
            reason,
            message,
            u.metadata.generation,
        )],
        observed_generation: u.metadata.generation,
        principal: Some(format!("User:{}", principal_name(u))),
        secret,
    };
    if same_conditions(&old.conditions, &status.conditions)
        && old.observed_generation == status.observed_generation
        && old.principal == status.principal
        && old.secret == status.secret
    {
        return Ok(());
    }
    announce(ctx, u, &old.conditions, &status.conditions).await;
    apply_status(api, u, &status).await
}

/// Whether `password` opens `credential` (a deliberately slow derivation,
/// so off the async threads).
async fn opens(password: &str, credential: &ScramCredentialRecord) -> bool {
    let (password, credential) = (password.to_string(), credential.clone());
    tokio::task::spawn_blocking(move || MECHANISM.password_matches(&credential, &password))
        .await
        .unwrap_or(false)
}

/// The outcome of [`ensure_scram`].
enum Scram {
    /// The credential is the user's and agrees with this Secret.
    Ready(String),
    /// The name belongs to a SCRAM user made elsewhere; why, for the status.
    Refused(String),
}

/// Stores the credential for the Secret's password (making both when
/// there are none yet) if the name's credential is the user's to manage;
/// changes nothing when they already agree, or when it is not.
async fn ensure_scram(
    u: &KafscaleUser,
    ctx: &Context,
    store: &MetadataStore,
) -> Result<Scram, Error> {
    let ns = u.namespace().unwrap_or_else(|| "default".into());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = u.name_any();
    let owner = owner_of(u);
    let stored = store.user_scram_credentials(&name).await?;
    let existing = secrets
        .get_opt(&name)
        .await?
        .as_ref()
        .and_then(secret_password);
    let managed = stored.iter().find(|s| s.mechanism == MECHANISM.name());
    let secret_matches = match (&existing, managed) {
        (Some(p), Some(s)) => opens(p, &s.credential).await,
        _ => false,
    };
    let (expect, credential) = match scram_step(&stored, &owner, secret_matches) {
        ScramStep::Refuse { mechanisms } => {
            // Before any Secret is made: a refused user gets no password.
            return Ok(Scram::Refused(user_exists_message(&name, &mechanisms)));
        }
        ScramStep::Keep => return Ok(Scram::Ready(name)),
        ScramStep::Adopt { revision } => match managed {
            Some(s) => (ScramExpect::CredentialAt(revision), s.credential.clone()),
            None => return Err(Error::NotYet(format!("the credential of '{name}' went"))),
        },
        step @ (ScramStep::Create | ScramStep::Rederive { .. }) => {
            let password = match existing {
                Some(p) => p,
                None => {
                    use base64::Engine;
                    let password =
                        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(24));
                    apply(&ctx.client, &ns, &credential_secret(u, &password)).await?;
                    password
                }
            };
            let credential = tokio::task::spawn_blocking(move || {
                MECHANISM.credential_for_password(&password, MIN_ITERATIONS)
            })
            .await
            .map_err(|e| Error::NotYet(format!("deriving the credential: {e}")))?;
            let expect = match step {
                ScramStep::Rederive { mark_revision } => ScramExpect::MarkAt(mark_revision),
                _ => ScramExpect::Absent,
            };
            (expect, credential)
        }
    };
    // Conditioned on what was read, so a credential an administrator
    // writes meanwhile is never overwritten: the next reconcile decides anew.
    if !store
        .put_owned_scram_credential(&name, MECHANISM.name(), &credential, &owner, expect)
        .await?
    {
        return Err(Error::NotYet(format!(
            "the SCRAM credential of '{name}' changed while it was being written; trying again"
        )));
    }
    tracing::info!(user = %name, "stored the user's SCRAM-SHA-512 credential");
    Ok(Scram::Ready(name))
}

async fn apply_user(
    u: &KafscaleUser,
    ctx: &Context,
    api: &Api<KafscaleUser>,
) -> Result<Action, Error> {
    let Some(cluster) = cluster_of(u, ctx).await? else {
        let message = format!(
            "KafscaleCluster {} does not exist in this namespace; create it or fix spec.clusterRef",
            u.spec.cluster_ref
        );
        set_status(ctx, api, u, false, "ClusterNotFound", message, None).await?;
        return Ok(Action::requeue(std::time::Duration::from_secs(30)));
    };
    let desired = match desired_acls(u) {
        Ok(d) => d,
        Err(why) => {
            set_status(ctx, api, u, false, "InvalidSpec", why, None).await?;
            return Ok(Action::await_change());
        }
    };
    let store = ctx.store(&cluster).await?;
    let secret = match u.spec.authentication.type_ {
        AuthenticationType::ScramSha512 => match ensure_scram(u, ctx, &store).await? {
            Scram::Ready(secret) => Some(secret),
            Scram::Refused(message) => {
                // No bindings either: they would grant the other user's
                // principal what this spec asks for.
                set_status(ctx, api, u, false, "UserExists", message, None).await?;
                return Ok(Action::requeue(std::time::Duration::from_secs(60)));
            }
        },
        AuthenticationType::TlsExternal => None,
    };
    let owner = owner_of(u);
    let plan = acl_changes(&store.list_acls_with_owners().await?, &owner, &desired);
    let mut not_ours = plan.not_ours.len();
    for acl in &plan.create {
        if !store.create_owned_acl(acl, &owner).await? {
            // Created by someone else since the listing: theirs.
            not_ours += 1;
        }
    }
    for (acl, mark_revision) in &plan.delete {
        // Nothing is removed if an administrator re-created or removed the
        // binding since the listing; it is theirs then.
        store.delete_owned_acl(acl, *mark_revision).await?;
    }
    let principal = format!("User:{}", principal_name(u));
    let message = format!(
        "{principal} has {} ACL binding(s){}{}",
        desired.len(),
        if not_ours > 0 {
            format!(
                "; {not_ours} of them existed before, created outside this KafscaleUser, \
                 and stay when dropped from its spec"
            )
        } else {
            String::new()
        },
        secret
            .as_ref()
            .map(|s| format!("; its credential is in Secret {s}"))
            .unwrap_or_default()
    );
    set_status(ctx, api, u, true, "Ready", message, secret).await?;
    // A periodic look puts back what someone removed from etcd by hand.
    Ok(Action::requeue(std::time::Duration::from_secs(300)))
}

/// The credentials of the user's name that deleting the user removes: those
/// marked as its own, and an unmarked SCRAM-SHA-512 one its Secret opens
/// (made by an operator from before marks); each with the state the
/// removal expects.
pub fn scram_removals(
    stored: &[StoredScram],
    owner: &Owner,
    secret_matches: bool,
) -> Vec<(String, ScramExpect)> {
    stored
        .iter()
        .filter_map(|s| {
            match &s.mark {
                Some(m) if &m.owner == owner => Some(ScramExpect::MarkAt(m.revision)),
                None if s.mechanism == MECHANISM.name() && secret_matches => {
                    Some(ScramExpect::CredentialAt(s.revision))
                }
                _ => None,
            }
            .map(|expect| (s.mechanism.clone(), expect))
        })
        .collect()
}

/// Removes the user's own credential and bindings (nothing an administrator
/// made for the same name or principal); the Secret goes with the user
/// (owner reference).
async fn cleanup_user(u: &KafscaleUser, ctx: &Context) -> Result<Action, Error> {
    let Some(cluster) = cluster_of(u, ctx).await? else {
        return Ok(Action::await_change());
    };
    let store = ctx.store(&cluster).await?;
    let name = u.name_any();
    let owner = owner_of(u);
    let stored = store.user_scram_credentials(&name).await?;
    // The Secret is read only when an unmarked credential could be ours.
    let unmarked = stored
        .iter()
        .find(|s| s.mechanism == MECHANISM.name() && s.mark.is_none());
    let secret_matches = match unmarked {
        Some(s) if u.spec.authentication.type_ == AuthenticationType::ScramSha512 => {
            let ns = u.namespace().unwrap_or_else(|| "default".into());
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
            match secrets
                .get_opt(&name)
                .await?
                .as_ref()
                .and_then(secret_password)
            {
                Some(p) => opens(&p, &s.credential).await,
                None => false,
            }
        }
        _ => false,
    };
    let mut credentials = 0;
    for (mechanism, expect) in scram_removals(&stored, &owner, secret_matches) {
        if store
            .delete_owned_scram_credential(&name, &mechanism, expect)
            .await?
        {
            credentials += 1;
        }
    }
    let plan = acl_changes(
        &store.list_acls_with_owners().await?,
        &owner,
        &BTreeSet::new(),
    );
    let mut bindings = 0;
    for (acl, mark_revision) in &plan.delete {
        if store.delete_owned_acl(acl, *mark_revision).await? {
            bindings += 1;
        }
    }
    tracing::info!(user = %name, credentials, bindings, "removed the user's own credential and ACLs");
    Ok(Action::await_change())
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{
        AclResource, AclRule, KafscaleUserSpec, UserAuthentication, UserAuthorization,
    };

    fn user(kind: AuthenticationType, rules: Vec<AclRule>) -> KafscaleUser {
        let mut u = KafscaleUser::new(
            "alice",
            KafscaleUserSpec {
                cluster_ref: "c".into(),
                authentication: UserAuthentication { type_: kind },
                authorization: Some(UserAuthorization { acls: rules }),
            },
        );
        u.metadata.namespace = Some("ns".into());
        u
    }

    fn rule(
        type_: AclResourceType,
        name: Option<&str>,
        pattern: AclPatternType,
        ops: &[AclOperationName],
    ) -> AclRule {
        AclRule {
            resource: AclResource {
                type_,
                name: name.map(String::from),
                pattern_type: pattern,
            },
            operations: ops.to_vec(),
            host: "*".into(),
            type_: AclRuleType::Allow,
        }
    }

    #[test]
    fn rules_become_one_binding_per_operation_for_the_users_principal() {
        let u = user(
            AuthenticationType::ScramSha512,
            vec![
                rule(
                    AclResourceType::Topic,
                    Some("orders"),
                    AclPatternType::Literal,
                    &[AclOperationName::Read, AclOperationName::Describe],
                ),
                rule(
                    AclResourceType::Group,
                    Some("app-"),
                    AclPatternType::Prefix,
                    &[AclOperationName::Read],
                ),
                rule(
                    AclResourceType::Cluster,
                    None,
                    AclPatternType::Literal,
                    &[AclOperationName::IdempotentWrite],
                ),
            ],
        );
        let acls = desired_acls(&u).unwrap();
        assert_eq!(acls.len(), 4);
        assert!(acls.iter().all(|a| a.principal == "User:alice"));
        assert!(acls
            .iter()
            .any(|a| a.resource_type == 3 && a.pattern_type == 4 && a.resource_name == "app-"));
        assert!(acls
            .iter()
            .any(|a| a.resource_type == 4 && a.resource_name == CLUSTER_NAME));
        let tls = user(AuthenticationType::TlsExternal, vec![]);
        assert_eq!(principal_name(&tls), "CN=alice");

        let nameless = user(
            AuthenticationType::ScramSha512,
            vec![rule(
                AclResourceType::Topic,
                None,
                AclPatternType::Literal,
                &[AclOperationName::Read],
            )],
        );
        assert!(desired_acls(&nameless)
            .unwrap_err()
            .contains("needs a name"));
    }

    fn me() -> Owner {
        owner_of(&user(AuthenticationType::ScramSha512, vec![]))
    }

    fn someone_else() -> Owner {
        Owner {
            namespace: "team-b".into(),
            ..me()
        }
    }

    fn binding(name: &str, principal: &str, permission: Permission) -> AclRecord {
        AclRecord {
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: principal.into(),
            host: "*".into(),
            operation: 3,
            permission: permission.code(),
        }
    }

    fn stored_acl(acl: &AclRecord, owner: Option<Owner>, revision: i64) -> StoredAcl {
        StoredAcl {
            acl: acl.clone(),
            mark: owner.map(|owner| kafscale_metadata::acls::OwnerMark { owner, revision }),
        }
    }

    #[test]
    fn only_the_users_own_bindings_are_removed_and_an_administrators_deny_stays() {
        let mine = |name: &str| binding(name, "User:alice", Permission::Allow);
        // kafka-acls --add --deny-principal User:alice: cuts the app off.
        let deny = binding("orders", "User:alice", Permission::Deny);
        // From before ownership marks, or made by hand: unmarked.
        let unmarked = mine("legacy");
        let bobs = binding("gone", "User:bob", Permission::Allow);
        let other_resources = binding("theirs", "User:alice", Permission::Allow);
        // Made for the user's old principal before its type changed.
        let old_principal = binding("orders", "User:CN=alice", Permission::Allow);
        let stored = vec![
            stored_acl(&mine("keep"), Some(me()), 10),
            stored_acl(&mine("gone"), Some(me()), 11),
            stored_acl(&deny, None, 12),
            stored_acl(&unmarked, None, 13),
            stored_acl(&bobs, None, 14),
            stored_acl(&other_resources, Some(someone_else()), 15),
            stored_acl(&old_principal, Some(me()), 16),
        ];
        let desired = BTreeSet::from([mine("keep"), mine("new")]);
        let plan = acl_changes(&stored, &me(), &desired);
        assert_eq!(plan.create, vec![mine("new")]);
        assert_eq!(
            plan.delete,
            vec![(mine("gone"), 11), (old_principal.clone(), 16)]
        );
        assert!(plan.not_ours.is_empty());

        // Deleting the KafscaleUser (nothing desired) removes its own only.
        let cleanup = acl_changes(&stored, &me(), &BTreeSet::new());
        assert_eq!(
            cleanup.delete,
            vec![(mine("keep"), 10), (mine("gone"), 11), (old_principal, 16)]
        );
        assert!(cleanup.create.is_empty());

        // A spec asking for a binding an administrator made first neither
        // creates nor claims it: it stays the administrator's.
        let wants_the_deny = BTreeSet::from([deny.clone(), unmarked.clone()]);
        let plan = acl_changes(&stored, &me(), &wants_the_deny);
        assert!(plan.create.is_empty());
        assert_eq!(plan.not_ours, vec![deny, unmarked]);
    }

    fn scram(mechanism: &str, owner: Option<Owner>) -> StoredScram {
        StoredScram {
            mechanism: mechanism.into(),
            credential: ScramCredentialRecord {
                salt: vec![1],
                iterations: 4096,
                stored_key: vec![2; 64],
                server_key: vec![3; 64],
            },
            revision: 20,
            mark: owner.map(|owner| kafscale_metadata::acls::OwnerMark {
                owner,
                revision: 21,
            }),
        }
    }

    #[test]
    fn a_scram_user_made_elsewhere_is_never_taken_over() {
        const SHA512: &str = "SCRAM-SHA-512";
        const SHA256: &str = "SCRAM-SHA-256";
        assert_eq!(scram_step(&[], &me(), false), ScramStep::Create);
        // kafka-configs --alter --add-config SCRAM-SHA-512=[...]: refused
        // whatever the Secret holds unless its password opens it.
        let admins = [scram(SHA512, None)];
        assert_eq!(
            scram_step(&admins, &me(), false),
            ScramStep::Refuse {
                mechanisms: vec![SHA512.into()]
            }
        );
        // Another mechanism authenticates the same principal: refused too.
        let mixed = [scram(SHA256, None), scram(SHA512, Some(me()))];
        assert_eq!(
            scram_step(&mixed, &me(), true),
            ScramStep::Refuse {
                mechanisms: vec![SHA256.into()]
            }
        );
        let another_resources = [scram(SHA512, Some(someone_else()))];
        assert!(matches!(
            scram_step(&another_resources, &me(), true),
            ScramStep::Refuse { .. }
        ));
        // The user's own: kept, or derived again for a changed Secret.
        let own = [scram(SHA512, Some(me()))];
        assert_eq!(scram_step(&own, &me(), true), ScramStep::Keep);
        assert_eq!(
            scram_step(&own, &me(), false),
            ScramStep::Rederive { mark_revision: 21 }
        );
        // An older operator's credential (no mark) that the user's Secret
        // opens is adopted, at the revision it was read.
        assert_eq!(
            scram_step(&admins, &me(), true),
            ScramStep::Adopt { revision: 20 }
        );

        let message = user_exists_message("legacy", &[SHA512.into()]);
        assert_eq!(
            message,
            "a SCRAM user 'legacy' already exists in the cluster, created outside this \
             KafscaleUser; delete it with kafka-configs --alter --delete-config SCRAM-SHA-512 \
             --entity-type users --entity-name legacy, or name the KafscaleUser differently"
        );
    }

    #[test]
    fn deleting_the_user_removes_only_its_own_credentials() {
        const SHA512: &str = "SCRAM-SHA-512";
        let stored = [scram("SCRAM-SHA-256", None), scram(SHA512, Some(me()))];
        assert_eq!(
            scram_removals(&stored, &me(), false),
            vec![(SHA512.to_string(), ScramExpect::MarkAt(21))]
        );
        let admins = [scram(SHA512, None)];
        assert!(scram_removals(&admins, &me(), false).is_empty());
        let other = [scram(SHA512, Some(someone_else()))];
        assert!(scram_removals(&other, &me(), true).is_empty());
        // An older operator's, opened by the user's Secret.
        assert_eq!(
            scram_removals(&admins, &me(), true),
            vec![(SHA512.to_string(), ScramExpect::CredentialAt(20))]
        );
    }

    #[test]
    fn the_secret_carries_what_clients_need_and_belongs_to_the_user() {
        let u = user(AuthenticationType::ScramSha512, vec![]);
        let s = credential_secret(&u, "pw");
        let data = s.data.as_ref().unwrap();
        assert_eq!(data["username"].0, b"alice");
        assert_eq!(secret_password(&s).as_deref(), Some("pw"));
        assert!(String::from_utf8_lossy(&data["sasl.jaas.config"].0).contains("password=\"pw\""));
        assert_eq!(s.metadata.namespace.as_deref(), Some("ns"));
    }
}
