//! Embeds an rpath to the libtorch that torch-sys linked (pzt's own build script does this for
//! pzt's binaries only; link args do not pass on to dependents).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
