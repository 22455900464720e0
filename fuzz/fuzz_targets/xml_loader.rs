#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../bodies/xml_loader.rs"]
mod body;

fuzz_target!(|data: &[u8]| body::run(data));
