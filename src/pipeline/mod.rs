//! The fetch stage shared by admission and the refresher: read the remote keys a source needs
//! as the pod's identity (single-flight for admission), then select properties and extract
//! fields into Secret data. It knows nothing of admission or the refresher: its failures are
//! a typed [`FetchError`] that each caller reports its own way.

pub mod cache;
pub mod fetch;
pub mod flight;
pub mod issue;

pub use cache::FetchCache;
pub use fetch::{
    assemble, fetch_documents, fetch_source, keys_of, Documents, FetchError, ReadFailure,
};
pub use flight::Flights;
