//! From the bytes a feed arrives as to the text the parsers read.

use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::FeedError;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Deflate cannot expand data more than about 1032 times; a size trailer claiming more is a
/// lie and must not size an allocation.
const DEFLATE_MAX_RATIO: usize = 1032;

pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&GZIP_MAGIC)
}

/// Gunzips `bytes` when they start with gzip's magic number, else returns them as they are.
/// The output may not exceed `limit` bytes: a few kilobytes of gzip can expand to gigabytes,
/// so the limit is enforced while inflating, not after. Truncated or corrupt gzip is an
/// error, never a silently shortened feed.
pub fn decompress(origin: &str, bytes: &[u8], limit: usize) -> Result<Vec<u8>, FeedError> {
    let too_large = || FeedError::new(origin, format!("larger than the limit of {limit} bytes; refused"));
    if !is_gzip(bytes) {
        if bytes.len() > limit {
            return Err(too_large());
        }
        return Ok(bytes.to_vec());
    }
    // Several gzip members in a row are one valid file (`cat a.gz b.gz`), hence MultiGz.
    let mut inflated = Vec::with_capacity(size_hint(bytes).min(limit));
    let read_at_most = (limit as u64).saturating_add(1);
    MultiGzDecoder::new(bytes)
        .take(read_at_most)
        .read_to_end(&mut inflated)
        .map_err(|e| FeedError::new(origin, format!("corrupt or truncated gzip data: {e}")))?;
    if inflated.len() > limit {
        return Err(too_large());
    }
    Ok(inflated)
}

/// The uncompressed size gzip's trailer records (of the last member, modulo 4 GiB), believed
/// only as far as deflate could expand the input. It only spares the reallocations of a
/// growing buffer.
fn size_hint(gzip: &[u8]) -> usize {
    let Some(trailer) = gzip.last_chunk::<4>() else {
        return 0;
    };
    let recorded = u32::from_le_bytes(*trailer) as usize;
    recorded.min(gzip.len().saturating_mul(DEFLATE_MAX_RATIO))
}

/// The text of a document, which must be UTF-8 (every feed format is); a leading byte order
/// mark, as spreadsheet programs write, is dropped.
pub fn as_text<'a>(origin: &str, bytes: &'a [u8]) -> Result<&'a str, FeedError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(text.strip_prefix('\u{feff}').unwrap_or(text)),
        Err(error) => Err(not_utf8(origin, bytes, error)),
    }
}

/// [`as_text`] for owned bytes, without copying them.
pub fn into_text(origin: &str, bytes: Vec<u8>) -> Result<String, FeedError> {
    match String::from_utf8(bytes) {
        Ok(mut text) => {
            if text.starts_with('\u{feff}') {
                text.replace_range(..'\u{feff}'.len_utf8(), "");
            }
            Ok(text)
        }
        Err(error) => Err(not_utf8(origin, error.as_bytes(), error.utf8_error())),
    }
}

fn not_utf8(origin: &str, bytes: &[u8], error: std::str::Utf8Error) -> FeedError {
    let offset = error.valid_up_to();
    let line = 1 + bytes[..offset].iter().filter(|&&b| b == b'\n').count();
    FeedError::new(
        format!("{origin}:{line}"),
        format!("not UTF-8 text (invalid byte 0x{:02x} at byte offset {offset})", bytes[offset]),
    )
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use flate2::write::GzEncoder;
    use flate2::Compression;

    use super::*;

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).unwrap();
        encoder.finish().unwrap()
    }

    #[test]
    fn gunzips_gzip_and_passes_the_rest_through() {
        let text = b"<updates>...</updates>".repeat(100);
        assert_eq!(decompress("u.xml.gz", &gzip(&text), 1 << 20).unwrap(), text);
        assert_eq!(decompress("u.xml", &text, 1 << 20).unwrap(), text);
        assert_eq!(decompress("empty", b"", 10).unwrap(), b"");
        let mut concatenated = gzip(b"first,");
        concatenated.extend(gzip(b"second"));
        assert_eq!(decompress("two members", &concatenated, 100).unwrap(), b"first,second");
    }

    #[test]
    fn the_limit_applies_with_or_without_gzip() {
        let bomb = gzip(&vec![b'0'; 10_000_000]);
        assert!(bomb.len() < 20_000, "{}", bomb.len());
        let error = decompress("database.json.gz", &bomb, 1_000_000).unwrap_err();
        assert_eq!(error.to_string(), "database.json.gz: larger than the limit of 1000000 bytes; refused");
        assert_eq!(decompress("exact", &gzip(b"12345"), 5).unwrap(), b"12345");
        assert!(decompress("plain", b"123456", 5).is_err());
        assert!(decompress("exact", b"12345", 5).is_ok());
    }

    #[test]
    fn truncated_or_corrupt_gzip_is_refused() {
        let whole = gzip(&b"RHSA-2026:1234,2026-01-01\n".repeat(1000));
        for cut in [whole.len() - 1, whole.len() - 8, whole.len() / 2, 12, 3] {
            let error = decompress("feed.gz", &whole[..cut], 1 << 20).unwrap_err();
            assert!(error.message.starts_with("corrupt or truncated gzip data"), "cut at {cut}: {error}");
        }
        let mut corrupt = whole.clone();
        let middle = corrupt.len() / 2;
        corrupt[middle] ^= 0xff;
        assert!(decompress("feed.gz", &corrupt, 1 << 20).is_err());
    }

    #[test]
    fn a_lying_size_trailer_is_not_believed() {
        let mut liar = gzip(b"tiny");
        let end = liar.len();
        liar[end - 4..].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(size_hint(&liar), liar.len() * DEFLATE_MAX_RATIO);
        assert!(decompress("liar.gz", &liar, 1 << 20).is_err(), "the trailer no longer matches");
    }

    #[test]
    fn text_must_be_utf8_and_loses_its_byte_order_mark() {
        assert_eq!(as_text("a.csv", "\u{feff}id,date".as_bytes()).unwrap(), "id,date");
        assert_eq!(into_text("a.csv", "\u{feff}id,date".as_bytes().to_vec()).unwrap(), "id,date");
        assert_eq!(into_text("a.csv", b"plain".to_vec()).unwrap(), "plain");
        let latin1 = b"id,date\nRHSA-1,2026-01-01\ncaf\xe9,2026-01-02\n";
        let expected = "a.csv:3: not UTF-8 text (invalid byte 0xe9 at byte offset 29)";
        assert_eq!(as_text("a.csv", latin1).unwrap_err().to_string(), expected);
        assert_eq!(into_text("a.csv", latin1.to_vec()).unwrap_err().to_string(), expected);
    }
}
