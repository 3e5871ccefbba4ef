#![allow(dead_code)]
pub mod moto;
pub mod openbao;
pub mod rig;
pub mod standin;
pub mod tools;
pub mod webhook;
