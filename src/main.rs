fn main() {
    println!("pzt {} (libtorch {})", env!("CARGO_PKG_VERSION"), pzt::backend::torch_version());
    for d in pzt::backend::devices() { println!("device {d:?}"); }
}
