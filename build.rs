//! Build script: links `pzt` against the libtorch found by `torch-sys` (the PyPI wheel in the
//! project's virtualenv), embeds an rpath to it so the binary starts without LD_LIBRARY_PATH,
//! forces the CUDA library into the link (so CUDA is used when a GPU is present), and compiles
//! the small C++ shim in `csrc/shim.cpp` for what tch does not expose.

use std::env;
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=csrc/shim.cpp");
    println!("cargo:rerun-if-changed=csrc/profiler.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-changed=csrc/dist_nccl.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.h");
    println!("cargo:rerun-if-changed=csrc/errors.h");
    println!("cargo:rerun-if-changed=csrc/reducer.cpp");
    println!("cargo:rerun-if-env-changed=PZT_GLOO_INCLUDE");
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
    // Gloo's headers (libtorch's Gloo process group includes them; the wheel has none):
    // scripts/bootstrap.sh puts Debian's into .venv/gloo/include.
    let gloo = match env::var("PZT_GLOO_INCLUDE") {
        Ok(v) => PathBuf::from(v),
        Err(_) => PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap_or_default())
            .join(".venv/gloo/include"),
    };
    if !gloo.join("gloo/algorithm.h").is_file() {
        eprintln!(
            "error: Gloo's headers are not in {} (run scripts/bootstrap.sh, or `make setup`, \
             which fetches them; or point PZT_GLOO_INCLUDE at a directory holding gloo/)",
            gloo.display()
        );
        std::process::exit(1);
    }

    cc::Build::new()
        .cpp(true)
        .file("csrc/shim.cpp")
        .file("csrc/profiler.cpp")
        .file("csrc/dist.cpp")
        .file("csrc/reducer.cpp")
        .include(&include)
        .include(&gloo)
        .include(&api_include)
        .flag("-std=c++17")
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
        .warnings(false)
        .compile("pzt_shim");

    // The NCCL process group, when this is the CUDA wheel and the CUDA headers it needs are
    // there (the wheel's nvidia/ packages; bootstrap adds crt/ and nv/ from NVIDIA's header
    // wheels).
    let nvidia = root.parent().map(|p| p.join("nvidia"));
    let nccl = nvidia.as_ref().and_then(|nv| {
        let dirs = [nv.join("nccl/include"), nv.join("cu13/include")];
        let have = lib.join("libtorch_cuda.so").exists()
            && dirs[0].join("nccl.h").is_file()
            && dirs[1].join("crt/host_config.h").is_file()
            && dirs[1].join("nv/target").is_file();
        have.then_some(dirs)
    });
    if let Some(dirs) = nccl {
        cc::Build::new()
            .cpp(true)
            .file("csrc/dist_nccl.cpp")
            .include(&include)
            .include(&api_include)
            .include(&dirs[0])
            .include(&dirs[1])
            .flag("-std=c++17")
            .flag_if_supported("-Wno-deprecated-declarations")
            .define("_GLIBCXX_USE_CXX11_ABI", abi.as_str())
            .warnings(false)
            .compile("pzt_shim_nccl");
        println!("cargo:rustc-cfg=pzt_has_nccl");
    }
    println!("cargo:rustc-check-cfg=cfg(pzt_has_nccl)");

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
