//! With the `link` feature, a program links SPDK's libraries through the flags of SPDK's
//! pkg-config files, and the committed bindings call into them with the layouts SPDK uses:
//! SPDK's JSON parser fills `spdk_json_val`s the Rust side reads back.
//! `cargo test -p spdk-sys --features link` (scripts/test-all runs it; needs SPDK built).
#![cfg(feature = "link")]

use spdk_sys as sys;

#[test]
fn spdk_parses_json_into_the_bindings_layout() {
    let mut text = br#"{"name": "Q0", "base_bdevs": ["A", "B"], "vote_threshold": 2}"#.to_vec();
    let mut values = vec![sys::spdk_json_val::default(); 16];
    // SAFETY: the buffer and the value array are live and sized as passed; SPDK decodes in
    // place and writes at most `values.len()` values.
    let n = unsafe {
        sys::spdk_json_parse(
            text.as_mut_ptr().cast(),
            text.len(),
            values.as_mut_ptr(),
            values.len(),
            std::ptr::null_mut(),
            0,
        )
    };
    // An object of 3 members: begin, 3 names, "Q0", array begin + 2 strings + end, 2, end.
    assert_eq!(n, 11);
    assert_eq!(values[0].type_, sys::SPDK_JSON_VAL_OBJECT_BEGIN);
    assert_eq!(values[0].len, 9);
    assert_eq!(values[1].type_, sys::SPDK_JSON_VAL_NAME);
    // SAFETY: SPDK points string values into `text`, alive here.
    let name =
        unsafe { std::slice::from_raw_parts(values[2].start as *const u8, values[2].len as usize) };
    assert_eq!(name, b"Q0");
    assert_eq!(values[4].type_, sys::SPDK_JSON_VAL_ARRAY_BEGIN);
    assert_eq!(values[4].len, 2);
    assert_eq!(values[9].type_, sys::SPDK_JSON_VAL_NUMBER);
}

#[test]
fn uuids_round_trip_through_spdk() {
    let text = c"7e4bb70c-7237-4139-8fe4-f92533e7c406";
    let mut uuid = sys::spdk_uuid::default();
    let mut back = [0 as std::ffi::c_char; 37];
    // SAFETY: live, NUL-terminated input and an output buffer of SPDK_UUID_STRING_LEN.
    unsafe {
        assert_eq!(sys::spdk_uuid_parse(&mut uuid, text.as_ptr()), 0);
        assert_eq!(
            sys::spdk_uuid_fmt_lower(back.as_mut_ptr(), back.len(), &uuid),
            0
        );
        assert_eq!(std::ffi::CStr::from_ptr(back.as_ptr()), text);
        assert_eq!(
            uuid.u.raw[0], 0x7e,
            "bytes in RFC order, as the uuid crate's"
        );
    }
}
