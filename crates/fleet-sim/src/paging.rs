//! Opaque paging tokens. A token names the operation, a fingerprint of the request's other
//! parameters (changing filters between pages is an error, as in AWS) and a cursor.

use crate::error::ApiError;

fn fnv(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytes {
        hash ^= u64::from(*byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// A fingerprint of everything in a request that must stay the same across pages.
pub fn fingerprint(parts: &[&str]) -> u64 {
    fnv(parts.join("\u{1f}").as_bytes())
}

pub fn encode(operation: &str, fingerprint: u64, cursor: u64) -> String {
    let key = fnv(operation.as_bytes());
    let check = fnv(format!("{key:x}/{fingerprint:x}/{cursor:x}").as_bytes());
    // Mixing the cursor with the key keeps tokens from looking like plain offsets.
    format!("{:016x}{:016x}{:016x}", cursor ^ key, fingerprint ^ key.rotate_left(17), check)
}

/// The cursor in `token`, or the error the operation answers for a foreign or forged token.
pub fn decode(token: &str, operation: &str, fingerprint: u64, error_code: &str) -> Result<u64, ApiError> {
    let invalid = || ApiError::new(error_code, "The specified token is not valid.");
    if token.len() != 48 || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(invalid());
    }
    let part = |i: usize| u64::from_str_radix(&token[i * 16..(i + 1) * 16], 16).map_err(|_| invalid());
    let key = fnv(operation.as_bytes());
    let cursor = part(0)? ^ key;
    let print = part(1)? ^ key.rotate_left(17);
    let check = part(2)?;
    if print != fingerprint || check != fnv(format!("{key:x}/{fingerprint:x}/{cursor:x}").as_bytes()) {
        return Err(invalid());
    }
    Ok(cursor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejections() {
        let print = fingerprint(&["a", "b"]);
        let token = encode("ListCommands", print, 42);
        assert_eq!(decode(&token, "ListCommands", print, "InvalidNextToken"), Ok(42));
        assert!(decode(&token, "ListCommandInvocations", print, "InvalidNextToken").is_err());
        assert!(decode(&token, "ListCommands", fingerprint(&["a"]), "InvalidNextToken").is_err());
        assert!(decode("garbage", "ListCommands", print, "InvalidNextToken").is_err());
        let mut forged = token.clone();
        forged.replace_range(0..1, if token.starts_with('0') { "1" } else { "0" });
        assert_eq!(
            decode(&forged, "ListCommands", print, "InvalidNextToken").map_err(|e| e.code),
            Err("InvalidNextToken".to_string())
        );
        assert_ne!(fingerprint(&["ab", ""]), fingerprint(&["a", "b"]));
    }
}
