//! The one bridge between SPDK's JSON and serde: RPC params arrive as SPDK's parsed value
//! array (`spdk_json_val`) and become a `serde_json::Value` the core's param structs decode;
//! replies, `driver_specific` and config entries are `serde_json::Value`s written through
//! SPDK's `spdk_json_write_*`. Everything else in the module speaks serde only.

use serde_json::{Map, Number, Value};
use spdk_sys as sys;

/// Why SPDK's parsed JSON could not be read (it was already validated by SPDK's parser, so
/// this means a value serde cannot hold, such as a number beyond f64).
#[derive(Debug)]
pub struct ReadError(pub String);

/// Turns SPDK's parsed JSON (a begin value followed by its contents) into a serde value.
///
/// # Safety
/// `vals` points at a value array produced by SPDK's JSON parser that is alive for the call:
/// a single value, or an `_BEGIN` value followed by `len` values and the `_END` value.
pub unsafe fn read_value(vals: *const sys::spdk_json_val) -> Result<Value, ReadError> {
    let mut at = 0;
    // SAFETY: the caller's promise on `vals`.
    unsafe { read_at(vals, &mut at) }
}

/// The bytes a string, name or number value points at.
///
/// # Safety
/// `v` is a value of SPDK's parser whose input buffer is alive.
unsafe fn text(v: &sys::spdk_json_val) -> &[u8] {
    if v.len == 0 {
        return &[];
    }
    // SAFETY: for strings, names and numbers SPDK's parser sets `start`/`len` to the decoded
    // bytes inside the request buffer, which lives as long as the value array.
    unsafe { std::slice::from_raw_parts(v.start as *const u8, v.len as usize) }
}

/// # Safety
/// As [`read_value`], with `*at` indexing a value inside the array.
unsafe fn read_at(vals: *const sys::spdk_json_val, at: &mut usize) -> Result<Value, ReadError> {
    let begin = *at;
    // SAFETY: `begin` is within the array (the caller's promise, kept by the loops below,
    // which stay inside the begin value's `len`).
    let v = unsafe { &*vals.add(begin) };
    *at += 1;
    let utf8 = |bytes: &[u8]| {
        String::from_utf8(bytes.to_vec()).map_err(|e| ReadError(format!("invalid UTF-8: {e}")))
    };
    Ok(match v.type_ {
        sys::SPDK_JSON_VAL_NULL => Value::Null,
        sys::SPDK_JSON_VAL_TRUE => Value::Bool(true),
        sys::SPDK_JSON_VAL_FALSE => Value::Bool(false),
        sys::SPDK_JSON_VAL_NUMBER => {
            // SAFETY: a number value of the live array.
            let t = unsafe { text(v) };
            let n: Number = std::str::from_utf8(t)
                .ok()
                .and_then(|s| serde_json::from_str(s).ok())
                .ok_or_else(|| {
                    ReadError(format!(
                        "number out of range: {}",
                        String::from_utf8_lossy(t)
                    ))
                })?;
            Value::Number(n)
        }
        // SAFETY: a string value of the live array.
        sys::SPDK_JSON_VAL_STRING => Value::String(utf8(unsafe { text(v) })?),
        sys::SPDK_JSON_VAL_ARRAY_BEGIN => {
            let end = begin + v.len as usize;
            let mut items = Vec::new();
            while *at <= end {
                // SAFETY: `*at` is inside the array's contents.
                items.push(unsafe { read_at(vals, at) }?);
            }
            *at = end + 2; // past the _END value
            Value::Array(items)
        }
        sys::SPDK_JSON_VAL_OBJECT_BEGIN => {
            let end = begin + v.len as usize;
            let mut map = Map::new();
            while *at <= end {
                // SAFETY: inside the object's contents, where names and values alternate.
                let name = unsafe { &*vals.add(*at) };
                if name.type_ != sys::SPDK_JSON_VAL_NAME {
                    return Err(ReadError("object member without a name".into()));
                }
                // SAFETY: a name value of the live array.
                let key = utf8(unsafe { text(name) })?;
                *at += 1;
                // SAFETY: the member's value follows its name inside the object.
                let value = unsafe { read_at(vals, at) }?;
                map.insert(key, value);
            }
            *at = end + 2;
            Value::Object(map)
        }
        other => return Err(ReadError(format!("unexpected JSON value type {other}"))),
    })
}

/// Writes `value` where SPDK's writer expects a value (an array element, a named member's
/// value, a reply's result).
///
/// # Safety
/// `w` is a live SPDK JSON write context positioned where a value may be written.
pub unsafe fn write_value(w: *mut sys::spdk_json_write_ctx, value: &Value) {
    // SPDK's writer records failures in `w` itself and reports them when the context ends;
    // the return codes of the individual calls carry nothing more.
    // SAFETY: for every call below, `w` is live (the caller's promise) and every
    // pointer/length pair describes a Rust string alive for the call.
    unsafe {
        match value {
            Value::Null => sys::spdk_json_write_null(w),
            Value::Bool(b) => sys::spdk_json_write_bool(w, *b),
            Value::Number(n) => {
                if let Some(u) = n.as_u64() {
                    sys::spdk_json_write_uint64(w, u)
                } else if let Some(i) = n.as_i64() {
                    sys::spdk_json_write_int64(w, i)
                } else {
                    sys::spdk_json_write_double(w, n.as_f64().unwrap_or(f64::NAN))
                }
            }
            Value::String(s) => sys::spdk_json_write_string_raw(w, s.as_ptr().cast(), s.len()),
            Value::Array(items) => {
                sys::spdk_json_write_array_begin(w);
                for item in items {
                    write_value(w, item);
                }
                sys::spdk_json_write_array_end(w)
            }
            Value::Object(map) => {
                sys::spdk_json_write_object_begin(w);
                for (name, item) in map {
                    write_named(w, name, item);
                }
                sys::spdk_json_write_object_end(w)
            }
        };
    }
}

/// Writes the member `name: value` into the object `w` is inside.
///
/// # Safety
/// `w` is a live SPDK JSON write context inside an object.
pub unsafe fn write_named(w: *mut sys::spdk_json_write_ctx, name: &str, value: &Value) {
    // SAFETY: `w` is live and inside an object; the name is alive for the call.
    unsafe {
        sys::spdk_json_write_name_raw(w, name.as_ptr().cast(), name.len());
        write_value(w, value);
    }
}
