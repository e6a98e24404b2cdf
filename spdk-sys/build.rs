//! Builds nothing by default: the bindings are committed (`src/bindings.rs`, SPDK v26.05), so a
//! machine without SPDK or libclang still builds the workspace.
//!
//! - feature `regenerate`: runs bindgen over `wrapper.h` with `$SPDK_DIR`'s headers and rewrites
//!   `src/bindings.rs` (needs libclang).
//! - feature `link`: links SPDK's shared libraries with the flags of `$SPDK_DIR`'s pkg-config
//!   files, all behind `-Wl,--no-as-needed`: SPDK's `.so` files do not record their own
//!   dependencies and its modules register from constructors, so no library may be dropped as
//!   "unused".
//!
//! `$SPDK_DIR` defaults to the tree `scripts/build-spdk` makes: `<workspace>/target/spdk`.
use std::env;
use std::path::PathBuf;

fn spdk_dir() -> PathBuf {
    println!("cargo:rerun-if-env-changed=SPDK_DIR");
    match env::var_os("SPDK_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"))
            .join("../target/spdk"),
    }
}

#[cfg(feature = "regenerate")]
fn regenerate(spdk: &std::path::Path) {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    println!("cargo:rerun-if-changed=wrapper.h");
    let bindings = bindgen::Builder::default()
        .header(manifest.join("wrapper.h").to_string_lossy())
        .clang_arg(format!("-I{}", spdk.join("build/include").display()))
        .clang_arg(format!("-I{}", spdk.join("include").display()))
        .allowlist_function("spdk_.*")
        .allowlist_type("spdk_.*")
        .allowlist_var("SPDK_.*")
        // Packed structs holding aligned types: Rust cannot lay these out, and the module
        // never looks inside them.
        .opaque_type("spdk_nvme_.*")
        .opaque_type("spdk_bdev_nvme_cdw13.*")
        .opaque_type("spdk_bdev_ext_io_opts")
        .derive_default(true)
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate_comments(false)
        .generate()
        .expect("bindgen over SPDK's headers");
    let out = manifest.join("src/bindings.rs");
    bindings
        .write_to_file(&out)
        .unwrap_or_else(|e| panic!("writing {}: {e}", out.display()));
}

#[cfg(feature = "link")]
fn link(spdk: &std::path::Path) {
    use std::process::Command;
    let pkgconfig = spdk.join("build/lib/pkgconfig");
    let output = Command::new("pkg-config")
        .env("PKG_CONFIG_PATH", &pkgconfig)
        .args([
            "--libs",
            "spdk_event_bdev",
            "spdk_event",
            "spdk_bdev",
            "spdk_env_dpdk",
            "spdk_syslibs",
        ])
        .output()
        .expect("running pkg-config");
    assert!(
        output.status.success(),
        "pkg-config found no SPDK in {}: {}",
        pkgconfig.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let libdir = spdk.join("build/lib");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", libdir.display());
    for flag in String::from_utf8_lossy(&output.stdout).split_whitespace() {
        println!("cargo:rustc-link-arg={flag}");
    }
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let spdk = spdk_dir();
    #[cfg(feature = "regenerate")]
    regenerate(&spdk);
    #[cfg(feature = "link")]
    link(&spdk);
    // Dependents (the module's build script) learn where SPDK is as DEP_SPDK_DIR.
    println!("cargo:dir={}", spdk.display());
}
