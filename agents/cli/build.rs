//! Lets a built `pas` find libtorch without LD_LIBRARY_PATH: the binary gets
//! a run path to the `lib/` of the libtorch it was linked against (LIBTORCH,
//! which .cargo/config.toml points at the one `make setup` installed). The
//! container image, where that path does not exist, sets LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    match std::env::var_os("LIBTORCH") {
        Some(dir) if std::path::Path::new(&dir).join("lib").is_dir() => {
            let lib = std::path::Path::new(&dir).join("lib");
            println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", lib.display());
        }
        _ => println!(
            "cargo:warning=no libtorch at LIBTORCH={}: run `make setup` (it installs one into ~/.cache/pas and links it at .libtorch), or set LIBTORCH to a libtorch 2.11",
            std::env::var("LIBTORCH").unwrap_or_default()
        ),
    }
}
