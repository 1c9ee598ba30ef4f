#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| eddy_state_fuzz::job_checkpoint(data));
