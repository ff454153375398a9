#![allow(dead_code)]

pub mod http;
pub mod moto;
pub mod sdk;
