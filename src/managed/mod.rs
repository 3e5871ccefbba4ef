//! The managed Secret, owned here and nowhere else: its annotation schema
//! ([`recorded`]), the ownership guard ([`guard`]), the one fenced writer ([`write`]), the
//! keyed digest ([`digest`]) and what the index every replica keeps holds of each managed
//! Secret ([`meta`]).

pub mod digest;
pub mod guard;
pub mod meta;
pub mod recorded;
pub mod write;

pub use digest::DigestKey;
pub use guard::{classify, current_in_index, inspect, Existing, Target};
pub use meta::ManagedMeta;
pub use recorded::{Recorded, RecordedError};
pub use write::{adopt, build, update_record, write, Fence, WriteOutcome};

#[derive(Debug, thiserror::Error)]
pub enum ManagedError {
    #[error(
        "Secret {name} already exists and is not managed by secret-injector; it was left untouched. \
         Choose another name (secret-injector.io/secret-name or the item's name) or remove that Secret"
    )]
    Foreign { name: String },
    #[error(
        "Secret {name} is managed by secret-injector for {existing_owner}, not for {owner}; it was left \
         untouched. Give this workload its own Secret name"
    )]
    OtherOwner {
        name: String,
        existing_owner: String,
        owner: String,
    },
    #[error(
        "Secret {name} was written for ServiceAccount {existing}, but this pod runs as {requested}; it was \
         left untouched. Use the same ServiceAccount or another Secret name"
    )]
    OtherServiceAccount {
        name: String,
        existing: String,
        requested: String,
    },
    #[error("reading or writing Secret {name} failed: {}", crate::k8s::api_error_message(.source))]
    Api {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error("writing Secret {name} kept conflicting with concurrent writers; try again")]
    Contended { name: String },
}

impl ManagedError {
    fn api(name: &str, source: kube::Error) -> Self {
        ManagedError::Api {
            name: name.to_string(),
            source: Box::new(source),
        }
    }
}
