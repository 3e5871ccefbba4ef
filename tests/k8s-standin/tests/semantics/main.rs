//! Proves that the Kubernetes API stand-in follows the real API server's semantics, through a
//! real `kube::Client` and through raw HTTP. One test binary, one module per concern; what the
//! stand-in models and where it differs is in ../../STANDIN.md.

mod cluster;
mod crud;
mod events;
mod helpers;
mod lists;
mod tokens;
mod watch;
mod writes;
