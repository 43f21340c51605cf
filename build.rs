//! Build script: links `pzt` against the libtorch found by `torch-sys` (the PyPI wheel in the
//! project's virtualenv), embeds an rpath to it so the binary starts without LD_LIBRARY_PATH,
//! forces the CUDA library into the link (so CUDA is used when a GPU is present), and compiles
//! the small C++ shim in `csrc/shim.cpp` for what tch does not expose.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=csrc/profiler.cpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PZT_CXX11_ABI");
    // torch-sys declares `links = "tch"` and prints `libtorch_lib`, which cargo hands to direct
    // dependents as DEP_TCH_LIBTORCH_LIB.
    let lib = match env::var("DEP_TCH_LIBTORCH_LIB") {
        Ok(v) => PathBuf::from(v),
        Err(_) => {
            println!(
                "cargo:warning=DEP_TCH_LIBTORCH_LIB is not set; run `make setup` (it builds \
                 against the project's virtualenv with LIBTORCH_USE_PYTORCH=1)"
            );
            return;
        }
    };
    // The wheel's layout: torch/lib and torch/include side by side.
    let root = lib
        .parent()
        .map(PathBuf::from)
        .unwrap_or_else(|| lib.clone());
    let include = root.join("include");
    let api_include = include.join("torch/csrc/api/include");
    let abi = env::var("PZT_CXX11_ABI").unwrap_or_else(|_| "1".to_string());

    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .file("csrc/profiler.cpp")
        .include(&include)
        .include(&api_include)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("pzt_shim");

    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rustc-link-arg=-ltorch_cpu");
    println!("cargo:rustc-link-arg=-lc10");
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-cfg=pzt_has_torch_cuda");
    }
    println!("cargo:rustc-link-arg=-Wl,--as-needed");
    println!("cargo:rustc-check-cfg=cfg(pzt_has_torch_cuda)");
    println!("cargo:libtorch_lib={}", lib.display());
}
