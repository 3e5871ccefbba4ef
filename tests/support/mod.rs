#![allow(dead_code)]
pub mod openbao;
pub mod standin;
