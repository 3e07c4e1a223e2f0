//! A model loaded end to end from arbitrary GGUF bytes, as `fasttx.load("x.gguf")` does it: the
//! config from the metadata, the model built from the tensors (quantized blocks kept), then one
//! decoding step on one thread.
#![no_main]

use fasttx_core::formats::gguf::GgufFile;
use fasttx_core::models::{self, registry};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = fasttx_fuzz::scratch_file("model.gguf", data);
    // The header is parsed twice, as in `fasttx.load` (once for the config, once by the loader).
    let Ok((arch, config)) = GgufFile::open(&path).and_then(|file| registry::gguf_config(&file))
    else {
        return;
    };
    if let Ok(model) = models::load(arch, &config.to_string(), &[path], "auto", 1) {
        fasttx_fuzz::run_one_step(model.as_ref());
    }
});
