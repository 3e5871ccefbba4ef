#![allow(dead_code)]
pub mod openbao;
pub mod rig;
pub mod standin;
pub mod webhook;
