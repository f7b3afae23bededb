//! The `KafscaleUser` reconciler: the user's SCRAM credential (its password
//! in a Secret the operator writes) or certificate principal, and its ACL
//! bindings, kept in the cluster's etcd, where every broker reads them.
//! Deleting the user removes both (a finalizer).

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::ByteString;
use kafscale_metadata::acls::{Operation, PatternType, Permission, ResourceType, CLUSTER_NAME};
use kafscale_metadata::scram::{random_bytes, ScramMechanism, MIN_ITERATIONS};
use kafscale_metadata::{AclRecord, CredentialChange, MetadataStore};
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

/// What to store and what to remove so that `principal`'s bindings are
/// exactly `desired` (bindings of other principals are not touched).
pub fn acl_changes(
    stored: &[AclRecord],
    principal: &str,
    desired: &BTreeSet<AclRecord>,
) -> (Vec<AclRecord>, Vec<AclRecord>) {
    let current: BTreeSet<&AclRecord> =
        stored.iter().filter(|a| a.principal == principal).collect();
    let create = desired
        .iter()
        .filter(|a| !current.contains(a))
        .cloned()
        .collect();
    let delete = current
        .into_iter()
        .filter(|a| !desired.contains(*a))
        .cloned()
        .collect();
    (create, delete)
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

/// Stores the credential for the Secret's password (making both when
/// there are none yet); changes nothing when they already agree.
async fn ensure_scram(
    u: &KafscaleUser,
    ctx: &Context,
    store: &MetadataStore,
) -> Result<String, Error> {
    let ns = u.namespace().unwrap_or_else(|| "default".into());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let name = u.name_any();
    let password = match secrets
        .get_opt(&name)
        .await?
        .as_ref()
        .and_then(secret_password)
    {
        Some(p) => p,
        None => {
            use base64::Engine;
            let password =
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes(24));
            apply(&ctx.client, &ns, &credential_secret(u, &password)).await?;
            password
        }
    };
    let stored = store.scram_credential(&name, MECHANISM.name()).await?;
    let checked = password.clone();
    let agrees = tokio::task::spawn_blocking(move || {
        stored.is_some_and(|c| MECHANISM.password_matches(&c, &checked))
    })
    .await
    .unwrap_or(false);
    if !agrees {
        let p = password.clone();
        let credential = tokio::task::spawn_blocking(move || {
            MECHANISM.credential_for_password(&p, MIN_ITERATIONS)
        })
        .await
        .map_err(|e| Error::NotYet(format!("deriving the credential: {e}")))?;
        store
            .alter_scram_credentials(&[CredentialChange::Upsert {
                user: name.clone(),
                mechanism: MECHANISM.name().into(),
                credential,
            }])
            .await?;
        tracing::info!(user = %name, "stored the user's SCRAM-SHA-512 credential");
    }
    Ok(name)
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
        AuthenticationType::ScramSha512 => Some(ensure_scram(u, ctx, &store).await?),
        AuthenticationType::TlsExternal => None,
    };
    let principal = format!("User:{}", principal_name(u));
    let stored = store.list_acls().await?;
    let (create, delete) = acl_changes(&stored, &principal, &desired);
    if !create.is_empty() {
        store.create_acls(&create).await?;
    }
    if !delete.is_empty() {
        store.delete_acls(&delete).await?;
    }
    let message = format!(
        "{principal} has {} ACL binding(s){}",
        desired.len(),
        secret
            .as_ref()
            .map(|s| format!("; its credential is in Secret {s}"))
            .unwrap_or_default()
    );
    set_status(ctx, api, u, true, "Ready", message, secret).await?;
    // A periodic look puts back what someone changed in etcd by hand.
    Ok(Action::requeue(std::time::Duration::from_secs(300)))
}

/// Removes the user's credentials and bindings; the Secret goes with the
/// user (owner reference).
async fn cleanup_user(u: &KafscaleUser, ctx: &Context) -> Result<Action, Error> {
    let Some(cluster) = cluster_of(u, ctx).await? else {
        return Ok(Action::await_change());
    };
    let store = ctx.store(&cluster).await?;
    let name = u.name_any();
    let mechanisms: Vec<String> = store
        .list_scram_credentials()
        .await?
        .into_iter()
        .filter(|(user, _, _)| *user == name)
        .map(|(_, m, _)| m)
        .collect();
    let changes: Vec<_> = mechanisms
        .into_iter()
        .map(|mechanism| CredentialChange::Delete {
            user: name.clone(),
            mechanism,
        })
        .collect();
    if u.spec.authentication.type_ == AuthenticationType::ScramSha512 && !changes.is_empty() {
        store.alter_scram_credentials(&changes).await?;
    }
    let principal = format!("User:{}", principal_name(u));
    let (_, delete) = acl_changes(&store.list_acls().await?, &principal, &BTreeSet::new());
    store.delete_acls(&delete).await?;
    tracing::info!(user = %name, bindings = delete.len(), "removed the user's credential and ACLs");
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

    #[test]
    fn changes_touch_only_the_users_own_bindings() {
        let mine = |name: &str| AclRecord {
            resource_type: 2,
            resource_name: name.into(),
            pattern_type: 3,
            principal: "User:alice".into(),
            host: "*".into(),
            operation: 3,
            permission: 3,
        };
        let others = AclRecord {
            principal: "User:bob".into(),
            ..mine("gone")
        };
        let stored = vec![mine("keep"), mine("gone"), others];
        let desired = BTreeSet::from([mine("keep"), mine("new")]);
        let (create, delete) = acl_changes(&stored, "User:alice", &desired);
        assert_eq!(create, vec![mine("new")]);
        assert_eq!(delete, vec![mine("gone")]);
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
