//! A minimal Amazon S3 (REST-XML, path-style addressing): buckets and whole objects, enough
//! for the install override lists AWS-RunPatchBaseline reads from `s3://bucket/key`.
//!
//! Bucket names are one namespace for every account, as in S3; a bucket belongs to the
//! account that created it and only that account can use it (there are no bucket policies).
//! Uploads are checked as S3 checks them: `Content-MD5`, one `x-amz-checksum-*` header (or an
//! aws-chunked trailer) and a hex `x-amz-content-sha256` must match the body.

use std::collections::BTreeMap;

use axum::http::{HeaderMap, Method};
use bytes::Bytes;

use crate::clock::{to_datetime, Millis};
use crate::digest;
use crate::xml::escape;

const XMLNS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
const MAX_KEY_BYTES: usize = 1024;
const DEFAULT_MAX_KEYS: usize = 1000;

/// The flexible checksums S3 accepts, by their header's suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    const ALL: [ChecksumAlgorithm; 5] = [
        ChecksumAlgorithm::Crc32,
        ChecksumAlgorithm::Crc32c,
        ChecksumAlgorithm::Crc64Nvme,
        ChecksumAlgorithm::Sha1,
        ChecksumAlgorithm::Sha256,
    ];

    pub fn header(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "x-amz-checksum-crc32",
            ChecksumAlgorithm::Crc32c => "x-amz-checksum-crc32c",
            ChecksumAlgorithm::Crc64Nvme => "x-amz-checksum-crc64nvme",
            ChecksumAlgorithm::Sha1 => "x-amz-checksum-sha1",
            ChecksumAlgorithm::Sha256 => "x-amz-checksum-sha256",
        }
    }

    /// The name S3's error messages use.
    fn label(self) -> &'static str {
        match self {
            ChecksumAlgorithm::Crc32 => "CRC32",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Crc64Nvme => "CRC64NVME",
            ChecksumAlgorithm::Sha1 => "SHA1",
            ChecksumAlgorithm::Sha256 => "SHA256",
        }
    }

    fn from_header(name: &str) -> Option<ChecksumAlgorithm> {
        let name = name.trim().to_ascii_lowercase();
        ChecksumAlgorithm::ALL.into_iter().find(|a| a.header() == name)
    }

    /// The checksum as its header carries it: base64 of the big-endian digest.
    pub fn compute(self, data: &[u8]) -> String {
        match self {
            ChecksumAlgorithm::Crc32 => digest::base64(&digest::crc32(data).to_be_bytes()),
            ChecksumAlgorithm::Crc32c => digest::base64(&digest::crc32c(data).to_be_bytes()),
            ChecksumAlgorithm::Crc64Nvme => digest::base64(&digest::crc64nvme(data).to_be_bytes()),
            ChecksumAlgorithm::Sha1 => digest::base64(&digest::sha1(data)),
            ChecksumAlgorithm::Sha256 => digest::base64(&digest::sha256(data)),
        }
    }

    fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::Crc32 | ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Crc64Nvme => 8,
            ChecksumAlgorithm::Sha1 => 20,
            ChecksumAlgorithm::Sha256 => 32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Object {
    pub body: Bytes,
    pub content_type: String,
    pub content_encoding: Option<String>,
    /// Quoted hex MD5, as S3 sends it.
    pub etag: String,
    pub last_modified_ms: Millis,
    /// The full-object checksum: the uploader's, else CRC64NVME as S3 computes by default.
    pub checksum: (ChecksumAlgorithm, String),
    /// `x-amz-meta-*` headers, lowercased names without the prefix.
    pub metadata: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Bucket {
    pub owner: String,
    pub region: String,
    pub created_ms: Millis,
    pub objects: BTreeMap<String, Object>,
}

/// Every bucket of every account.
#[derive(Debug, Default)]
pub struct S3 {
    pub buckets: BTreeMap<String, Bucket>,
}

/// An S3 error: `<Error><Code>…` with extra members (BucketName, Key, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub extra: Vec<(&'static str, String)>,
}

impl S3Error {
    fn new(status: u16, code: &str, message: impl Into<String>) -> S3Error {
        S3Error { status, code: code.to_string(), message: message.into(), extra: Vec::new() }
    }

    fn with(mut self, name: &'static str, value: impl Into<String>) -> S3Error {
        self.extra.push((name, value.into()));
        self
    }

    pub fn slow_down() -> S3Error {
        S3Error::new(503, "SlowDown", "Please reduce your request rate.")
    }

    pub fn internal() -> S3Error {
        S3Error::new(500, "InternalError", "We encountered an internal error. Please try again.")
    }

    pub fn access_denied() -> S3Error {
        S3Error::new(403, "AccessDenied", "Access Denied")
    }

    fn no_such_bucket(bucket: &str) -> S3Error {
        S3Error::new(404, "NoSuchBucket", "The specified bucket does not exist").with("BucketName", bucket)
    }

    fn no_such_key(key: &str) -> S3Error {
        S3Error::new(404, "NoSuchKey", "The specified key does not exist.").with("Key", key)
    }

    fn not_implemented(what: &str) -> S3Error {
        S3Error::new(501, "NotImplemented", format!("{what} is not implemented by the simulator"))
    }

    fn invalid_request(message: impl Into<String>) -> S3Error {
        S3Error::new(400, "InvalidRequest", message)
    }

    /// The XML document (HEAD answers go without it).
    pub fn xml(&self, request_id: &str, host_id: &str) -> String {
        let mut xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message>",
            escape(&self.code),
            escape(&self.message)
        );
        for (name, value) in &self.extra {
            xml.push_str(&format!("<{name}>{}</{name}>", escape(value)));
        }
        xml.push_str(&format!(
            "<RequestId>{}</RequestId><HostId>{}</HostId></Error>",
            escape(request_id),
            escape(host_id)
        ));
        xml
    }
}

/// One S3 call, already routed to the caller's (account, region).
#[derive(Debug)]
pub struct S3Request<'a> {
    pub method: &'a Method,
    /// The URI path, still percent-encoded.
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    pub account: &'a str,
    pub region: &'a str,
    pub now_ms: Millis,
}

/// A successful answer.
#[derive(Debug, Default)]
pub struct S3Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl S3Response {
    fn ok() -> S3Response {
        S3Response { status: 200, ..S3Response::default() }
    }

    fn header(mut self, name: &str, value: impl Into<String>) -> S3Response {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    fn xml(body: String) -> S3Response {
        S3Response {
            status: 200,
            headers: vec![("content-type".into(), "application/xml".into())],
            body: body.into(),
        }
    }
}

/// `%XX` decoding of a URI path (no `+` for space: that is a form encoding).
pub fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// S3's `encoding-type=url`: everything but unreserved characters and `/` percent-encoded.
fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~/".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// S3's rules for general purpose bucket names.
pub fn is_valid_bucket_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    let shape = (3..=63).contains(&bytes.len())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'.' || *b == b'-')
        && bytes.first().is_some_and(|b| b.is_ascii_alphanumeric())
        && bytes.last().is_some_and(|b| b.is_ascii_alphanumeric())
        && !name.contains("..");
    let ip_like = name.split('.').count() == 4 && name.split('.').all(|part| part.parse::<u8>().is_ok());
    let reserved = ["xn--", "sthree-", "amzn-s3-demo-"].iter().any(|p| name.starts_with(p))
        || ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"].iter().any(|s| name.ends_with(s));
    shape && !ip_like && !reserved
}

/// `/bucket[/key]`, decoded; `None` for the service root.
pub fn split_path(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix('/')?;
    if rest.is_empty() {
        return None;
    }
    let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
    Some((percent_decode(bucket)?, percent_decode(key)?))
}

/// The operation name a call counts under in the statistics.
pub fn operation_name(method: &Method, path: &str, query: &str) -> &'static str {
    let has = |name: &str| form_urlencoded::parse(query.as_bytes()).any(|(k, _)| k == name);
    match (split_path(path), method.as_str()) {
        (None, "GET") => "ListBuckets",
        (None, _) => "S3UnknownOperation",
        (Some((_, key)), method) if key.is_empty() => match method {
            "PUT" => "CreateBucket",
            "HEAD" => "HeadBucket",
            "DELETE" => "DeleteBucket",
            "GET" if has("location") => "GetBucketLocation",
            "GET" if has("list-type") => "ListObjectsV2",
            "GET" => "ListObjects",
            _ => "S3UnknownOperation",
        },
        (Some(_), method) => match method {
            "PUT" => "PutObject",
            "GET" => "GetObject",
            "HEAD" => "HeadObject",
            "DELETE" => "DeleteObject",
            _ => "S3UnknownOperation",
        },
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(ms: Millis) -> String {
    to_datetime(ms).format("%a, %d %b %Y %H:%M:%S GMT").to_string()
}

fn iso(ms: Millis) -> String {
    to_datetime(ms).format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Query parameters every operation tolerates: the Rust SDK's `x-id` and presigning's.
fn is_ambient_parameter(name: &str) -> bool {
    name == "x-id" || name.starts_with("X-Amz-") || name.starts_with("x-amz-")
}

fn check_parameters(query: &[(String, String)], allowed: &[&str]) -> Result<(), S3Error> {
    match query.iter().find(|(k, _)| !is_ambient_parameter(k) && !allowed.contains(&k.as_str())) {
        Some((name, _)) => Err(S3Error::not_implemented(&format!("the `{name}` parameter or subresource"))),
        None => Ok(()),
    }
}

/// An aws-chunked body's trailing headers: lowercase names and values.
pub type Trailers = Vec<(String, String)>;

/// Decodes an `aws-chunked` body (signed or unsigned chunks) into the payload and its trailers.
pub fn decode_aws_chunked(body: &[u8]) -> Result<(Vec<u8>, Trailers), S3Error> {
    let malformed =
        |why: &str| S3Error::new(400, "IncompleteBody", format!("The aws-chunked body is malformed: {why}"));
    let mut payload = Vec::with_capacity(body.len());
    let mut rest = body;
    let line = |rest: &mut &[u8]| -> Result<String, S3Error> {
        let end =
            rest.windows(2).position(|w| w == b"\r\n").ok_or_else(|| malformed("a line without CRLF"))?;
        let text = std::str::from_utf8(&rest[..end])
            .map_err(|_| malformed("a header that is not UTF-8"))?
            .to_string();
        *rest = &rest[end + 2..];
        Ok(text)
    };
    loop {
        let header = line(&mut rest)?;
        let size_text = header.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_text, 16).map_err(|_| malformed("a chunk size that is not hex"))?;
        if size == 0 {
            break;
        }
        if rest.len() < size + 2 || &rest[size..size + 2] != b"\r\n" {
            return Err(malformed("a chunk shorter than its size"));
        }
        payload.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
    let mut trailers = Vec::new();
    while !rest.is_empty() {
        let text = line(&mut rest)?;
        if text.is_empty() {
            break;
        }
        let (name, value) = text.split_once(':').ok_or_else(|| malformed("a trailer without a colon"))?;
        trailers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
    }
    Ok((payload, trailers))
}

/// An upload's payload as it is stored.
struct Upload {
    body: Bytes,
    content_encoding: Option<String>,
    /// The checksum the client sent (in a header or a trailer), verified.
    checksum: Option<(ChecksumAlgorithm, String)>,
}

/// The upload's body as stored, after undoing aws-chunked and checking every digest sent.
fn checked_body(request: &S3Request<'_>) -> Result<Upload, S3Error> {
    let headers = request.headers;
    if let Some(claimed) = header(headers, "x-amz-content-sha256") {
        if claimed.len() == 64 && claimed.bytes().all(|b| b.is_ascii_hexdigit()) {
            let computed = digest::hex(&digest::sha256(request.body));
            if !claimed.eq_ignore_ascii_case(&computed) {
                return Err(S3Error::new(
                    400,
                    "XAmzContentSHA256Mismatch",
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                )
                .with("ClientComputedContentSHA256", claimed)
                .with("S3ComputedContentSHA256", computed));
            }
        }
    }
    let encodings: Vec<String> = header(headers, "content-encoding")
        .map(|v| v.split(',').map(|e| e.trim().to_string()).filter(|e| !e.is_empty()).collect())
        .unwrap_or_default();
    let chunked = encodings.iter().any(|e| e.eq_ignore_ascii_case("aws-chunked"));
    let remaining: Vec<String> =
        encodings.into_iter().filter(|e| !e.eq_ignore_ascii_case("aws-chunked")).collect();
    let content_encoding = (!remaining.is_empty()).then(|| remaining.join(","));
    let (body, trailers) = if chunked {
        let declared = header(headers, "x-amz-decoded-content-length")
            .ok_or_else(|| {
                S3Error::new(411, "MissingContentLength", "You must provide the Content-Length HTTP header.")
            })?
            .parse::<usize>()
            .map_err(|_| S3Error::invalid_request("x-amz-decoded-content-length is not a number"))?;
        let (payload, trailers) = decode_aws_chunked(request.body)?;
        if payload.len() != declared {
            return Err(S3Error::new(
                400,
                "IncompleteBody",
                "You did not provide the number of bytes specified by the Content-Length HTTP header",
            ));
        }
        (Bytes::from(payload), trailers)
    } else {
        (request.body.clone(), Vec::new())
    };
    if let Some(md5) = header(headers, "content-md5") {
        let sent = digest::unbase64(md5.trim()).filter(|d| d.len() == 16).ok_or_else(|| {
            S3Error::new(400, "InvalidDigest", "The Content-MD5 you specified was invalid.")
        })?;
        if sent != digest::md5(&body) {
            return Err(S3Error::new(
                400,
                "BadDigest",
                "The Content-MD5 you specified did not match what we received.",
            )
            .with("ExpectedDigest", md5));
        }
    }
    let mut sent: Vec<(ChecksumAlgorithm, String)> = ChecksumAlgorithm::ALL
        .into_iter()
        .filter_map(|a| header(headers, a.header()).map(|v| (a, v.trim().to_string())))
        .collect();
    if let Some(trailer) = header(headers, "x-amz-trailer") {
        let algorithm = ChecksumAlgorithm::from_header(trailer).ok_or_else(|| {
            S3Error::invalid_request(format!(
                "The value specified in the x-amz-trailer header is not supported: {trailer}"
            ))
        })?;
        let value =
            trailers.iter().find(|(name, _)| name == algorithm.header()).map(|(_, v)| v.clone()).ok_or_else(
                || {
                    S3Error::new(
                        400,
                        "IncompleteBody",
                        format!("The body lacks the {} trailer it announced", algorithm.header()),
                    )
                },
            )?;
        sent.push((algorithm, value));
    }
    if sent.len() > 1 {
        return Err(S3Error::invalid_request(
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed.",
        ));
    }
    if let Some(algorithm) = header(headers, "x-amz-sdk-checksum-algorithm") {
        let matches = sent.first().is_some_and(|(a, _)| a.label().eq_ignore_ascii_case(algorithm));
        if !matches {
            return Err(S3Error::invalid_request(format!(
                "x-amz-sdk-checksum-algorithm specified, but no corresponding x-amz-checksum-* or x-amz-trailer headers were found for {algorithm}."
            )));
        }
    }
    let checksum = match sent.pop() {
        Some((algorithm, value)) => {
            let valid = digest::unbase64(&value).is_some_and(|d| d.len() == algorithm.digest_len());
            if !valid {
                return Err(S3Error::invalid_request(format!(
                    "Value for {} header is invalid.",
                    algorithm.header()
                )));
            }
            if algorithm.compute(&body) != value {
                return Err(S3Error::new(
                    400,
                    "BadDigest",
                    format!("The {} you specified did not match the calculated checksum.", algorithm.label()),
                ));
            }
            Some((algorithm, value))
        }
        None => None,
    };
    Ok(Upload { body, content_encoding, checksum })
}

/// Why a node could not read an object.
pub fn describe_read_error(error: &S3Error) -> String {
    format!("{} ({}): {}", error.code, error.status, error.message)
}

impl S3 {
    /// The bucket if `account` may use it.
    fn bucket(&self, name: &str, account: &str) -> Result<&Bucket, S3Error> {
        let bucket = self.buckets.get(name).ok_or_else(|| S3Error::no_such_bucket(name))?;
        if bucket.owner != account {
            return Err(S3Error::access_denied());
        }
        Ok(bucket)
    }

    fn bucket_mut(&mut self, name: &str, account: &str) -> Result<&mut Bucket, S3Error> {
        self.bucket(name, account)?;
        self.buckets.get_mut(name).ok_or_else(|| S3Error::no_such_bucket(name))
    }

    /// What a node of `account` reads at `s3://bucket/key` (from any region, as the SSM
    /// agent follows the bucket's region).
    pub fn read(&self, account: &str, bucket: &str, key: &str) -> Result<&Object, S3Error> {
        self.bucket(bucket, account)?.objects.get(key).ok_or_else(|| S3Error::no_such_key(key))
    }

    /// Answers one call. HEAD errors are the caller's to strip of their body.
    pub fn answer(&mut self, request: &S3Request<'_>) -> Result<S3Response, S3Error> {
        let query: Vec<(String, String)> = form_urlencoded::parse(request.query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let Some((bucket, key)) = split_path(request.path) else {
            if request.path != "/" {
                return Err(S3Error::invalid_request("the request path is not valid percent-encoded UTF-8"));
            }
            return match *request.method {
                Method::GET => Ok(self.list_buckets(request.account)),
                _ => Err(S3Error::new(
                    405,
                    "MethodNotAllowed",
                    "The specified method is not allowed against this resource.",
                )),
            };
        };
        if key.is_empty() {
            return self.bucket_operation(request, &bucket, &query);
        }
        if key.len() > MAX_KEY_BYTES {
            return Err(S3Error::new(400, "KeyTooLongError", "Your key is too long").with("Key", key));
        }
        let bucket_region = self.bucket(&bucket, request.account)?.region.clone();
        check_region(&bucket_region, request.region)?;
        match *request.method {
            Method::PUT => {
                check_parameters(&query, &[])?;
                if request.headers.contains_key("x-amz-copy-source") {
                    return Err(S3Error::not_implemented("CopyObject"));
                }
                self.put_object(request, &bucket, &key)
            }
            Method::GET | Method::HEAD => {
                check_parameters(&query, &[])?;
                if request.headers.contains_key("range") {
                    return Err(S3Error::not_implemented("a ranged GetObject"));
                }
                let object = self
                    .bucket(&bucket, request.account)?
                    .objects
                    .get(&key)
                    .ok_or_else(|| S3Error::no_such_key(&key))?;
                Ok(object_response(object, request))
            }
            Method::DELETE => {
                check_parameters(&query, &[])?;
                // Deleting a key that does not exist succeeds, as in S3.
                self.bucket_mut(&bucket, request.account)?.objects.remove(&key);
                Ok(S3Response { status: 204, ..S3Response::default() })
            }
            _ => Err(S3Error::not_implemented(&format!("{} on an object", request.method))),
        }
    }

    fn list_buckets(&self, account: &str) -> S3Response {
        let mut xml = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"{XMLNS}\"><Owner><ID>{account}</ID></Owner><Buckets>");
        for (name, bucket) in self.buckets.iter().filter(|(_, b)| b.owner == account) {
            xml.push_str(&format!(
                "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate><BucketRegion>{}</BucketRegion></Bucket>",
                escape(name),
                iso(bucket.created_ms),
                escape(&bucket.region)
            ));
        }
        xml.push_str("</Buckets></ListAllMyBucketsResult>");
        S3Response::xml(xml)
    }

    fn bucket_operation(
        &mut self,
        request: &S3Request<'_>,
        bucket: &str,
        query: &[(String, String)],
    ) -> Result<S3Response, S3Error> {
        match *request.method {
            Method::PUT => {
                check_parameters(query, &[])?;
                self.create_bucket(request, bucket)
            }
            Method::HEAD => {
                check_parameters(query, &[])?;
                let found = self.bucket(bucket, request.account)?;
                Ok(S3Response::ok()
                    .header("x-amz-bucket-region", found.region.clone())
                    .header("x-amz-access-point-alias", "false"))
            }
            Method::DELETE => {
                check_parameters(query, &[])?;
                let found = self.bucket(bucket, request.account)?;
                check_region(&found.region, request.region)?;
                if !found.objects.is_empty() {
                    return Err(S3Error::new(
                        409,
                        "BucketNotEmpty",
                        "The bucket you tried to delete is not empty",
                    )
                    .with("BucketName", bucket));
                }
                self.buckets.remove(bucket);
                Ok(S3Response { status: 204, ..S3Response::default() })
            }
            Method::GET if query.iter().any(|(k, _)| k == "location") => {
                check_parameters(query, &["location"])?;
                let found = self.bucket(bucket, request.account)?;
                // us-east-1 buckets answer an empty constraint, for legacy reasons.
                let constraint =
                    if found.region == "us-east-1" { String::new() } else { found.region.clone() };
                Ok(S3Response::xml(format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<LocationConstraint xmlns=\"{XMLNS}\">{constraint}</LocationConstraint>"
                )))
            }
            Method::GET if query.iter().any(|(k, v)| k == "list-type" && v == "2") => {
                check_parameters(
                    query,
                    &[
                        "list-type",
                        "prefix",
                        "delimiter",
                        "max-keys",
                        "continuation-token",
                        "start-after",
                        "encoding-type",
                        "fetch-owner",
                    ],
                )?;
                let found = self.bucket(bucket, request.account)?;
                check_region(&found.region, request.region)?;
                list_objects_v2(bucket, found, query)
            }
            Method::GET => Err(S3Error::not_implemented("ListObjects (version 1; use list-type=2)")),
            _ => Err(S3Error::not_implemented(&format!("{} on a bucket", request.method))),
        }
    }

    fn create_bucket(&mut self, request: &S3Request<'_>, name: &str) -> Result<S3Response, S3Error> {
        if !is_valid_bucket_name(name) {
            return Err(S3Error::new(400, "InvalidBucketName", "The specified bucket is not valid.")
                .with("BucketName", name));
        }
        let constraint = location_constraint(request.body)?;
        let region = match constraint.as_deref() {
            None if request.region == "us-east-1" => "us-east-1".to_string(),
            None => {
                return Err(S3Error::new(
                    400,
                    "IllegalLocationConstraintException",
                    "The unspecified location constraint is incompatible for the region specific endpoint this request was sent to.",
                ))
            }
            Some("us-east-1") => {
                return Err(S3Error::new(400, "InvalidLocationConstraint", "The specified location-constraint is not valid")
                    .with("LocationConstraint", "us-east-1"))
            }
            Some(region) if region != request.region => {
                return Err(S3Error::new(
                    400,
                    "IllegalLocationConstraintException",
                    format!("The {region} location constraint is incompatible for the region specific endpoint this request was sent to."),
                ))
            }
            Some(region) => region.to_string(),
        };
        if let Some(existing) = self.buckets.get(name) {
            if existing.owner != request.account {
                return Err(S3Error::new(
                    409,
                    "BucketAlreadyExists",
                    "The requested bucket name is not available. The bucket namespace is shared by all users of the system. Please select a different name and try again.",
                )
                .with("BucketName", name));
            }
            // S3 keeps answering 200 to its owner in us-east-1, for legacy compatibility.
            if existing.region == "us-east-1" && region == "us-east-1" {
                return Ok(S3Response::ok().header("location", format!("/{name}")));
            }
            return Err(S3Error::new(
                409,
                "BucketAlreadyOwnedByYou",
                "Your previous request to create the named bucket succeeded and you already own it.",
            )
            .with("BucketName", name));
        }
        self.buckets.insert(
            name.to_string(),
            Bucket {
                owner: request.account.to_string(),
                region,
                created_ms: request.now_ms,
                objects: BTreeMap::new(),
            },
        );
        Ok(S3Response::ok().header("location", format!("/{name}")))
    }

    fn put_object(
        &mut self,
        request: &S3Request<'_>,
        bucket: &str,
        key: &str,
    ) -> Result<S3Response, S3Error> {
        let Upload { body, content_encoding, checksum: sent } = checked_body(request)?;
        let checksum = sent
            .unwrap_or_else(|| (ChecksumAlgorithm::Crc64Nvme, ChecksumAlgorithm::Crc64Nvme.compute(&body)));
        let etag = format!("\"{}\"", digest::hex(&digest::md5(&body)));
        let metadata = request
            .headers
            .iter()
            .filter_map(|(name, value)| {
                let name = name.as_str().strip_prefix("x-amz-meta-")?;
                Some((name.to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        let object = Object {
            content_type: header(request.headers, "content-type")
                .unwrap_or("binary/octet-stream")
                .to_string(),
            content_encoding,
            etag: etag.clone(),
            last_modified_ms: request.now_ms,
            checksum: checksum.clone(),
            metadata,
            body,
        };
        self.bucket_mut(bucket, request.account)?.objects.insert(key.to_string(), object);
        let mut response =
            S3Response::ok().header("etag", etag).header("x-amz-server-side-encryption", "AES256");
        response =
            response.header(checksum.0.header(), checksum.1).header("x-amz-checksum-type", "FULL_OBJECT");
        Ok(response)
    }
}

/// A bucket answers only through its own region's endpoint; SigV4 names the region the
/// request was signed for, which S3 rejects when it is another.
fn check_region(bucket_region: &str, signed_region: &str) -> Result<(), S3Error> {
    if bucket_region == signed_region {
        return Ok(());
    }
    Err(S3Error::new(
        400,
        "AuthorizationHeaderMalformed",
        format!("The authorization header is malformed; the region '{signed_region}' is wrong; expecting '{bucket_region}'"),
    )
    .with("Region", bucket_region))
}

/// CreateBucketConfiguration's LocationConstraint, if the body has one.
fn location_constraint(body: &[u8]) -> Result<Option<String>, S3Error> {
    let malformed = || {
        S3Error::new(
            400,
            "MalformedXML",
            "The XML you provided was not well-formed or did not validate against our published schema",
        )
    };
    let text = std::str::from_utf8(body).map_err(|_| malformed())?.trim();
    if text.is_empty() {
        return Ok(None);
    }
    if !text.contains("<CreateBucketConfiguration") || !text.ends_with("</CreateBucketConfiguration>") {
        return Err(malformed());
    }
    let Some(start) = text.find("<LocationConstraint>") else { return Ok(None) };
    let rest = &text[start + "<LocationConstraint>".len()..];
    let end = rest.find("</LocationConstraint>").ok_or_else(malformed)?;
    let value = rest[..end].trim();
    Ok((!value.is_empty()).then(|| value.to_string()))
}

fn object_response(object: &Object, request: &S3Request<'_>) -> S3Response {
    let mut response = S3Response::ok()
        .header("etag", object.etag.clone())
        .header("last-modified", http_date(object.last_modified_ms))
        .header("content-type", object.content_type.clone())
        .header("content-length", object.body.len().to_string())
        .header("accept-ranges", "bytes")
        .header("x-amz-server-side-encryption", "AES256");
    if let Some(encoding) = &object.content_encoding {
        response = response.header("content-encoding", encoding.clone());
    }
    for (name, value) in &object.metadata {
        response = response.header(&format!("x-amz-meta-{name}"), value.clone());
    }
    if header(request.headers, "x-amz-checksum-mode").is_some_and(|m| m.eq_ignore_ascii_case("ENABLED")) {
        response = response
            .header(object.checksum.0.header(), object.checksum.1.clone())
            .header("x-amz-checksum-type", "FULL_OBJECT");
    }
    if *request.method == Method::GET {
        response.body = object.body.clone();
    }
    response
}

fn list_objects_v2(name: &str, bucket: &Bucket, query: &[(String, String)]) -> Result<S3Response, S3Error> {
    let get = |key: &str| query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
    let prefix = get("prefix").unwrap_or("");
    let delimiter = get("delimiter").filter(|d| !d.is_empty());
    let max_keys = match get("max-keys") {
        None => DEFAULT_MAX_KEYS,
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .map(|n| (n as usize).min(DEFAULT_MAX_KEYS))
            .ok_or_else(|| {
                S3Error::new(
                    400,
                    "InvalidArgument",
                    "Provided max-keys not an integer or within integer range",
                )
                .with("ArgumentName", "max-keys")
            })?,
    };
    let url = match get("encoding-type") {
        None => false,
        Some("url") => true,
        Some(_) => {
            return Err(S3Error::new(400, "InvalidArgument", "Invalid Encoding Method specified in Request")
                .with("ArgumentName", "encoding-type"))
        }
    };
    let token = get("continuation-token");
    // The token is the hex of the last key or common prefix the previous page ended with.
    let after = match token {
        Some(token) => Some(
            (token.is_ascii() && token.len() % 2 == 0)
                .then(|| {
                    (0..token.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(&token[i..i + 2], 16).ok())
                        .collect::<Option<Vec<u8>>>()
                })
                .flatten()
                .and_then(|bytes| String::from_utf8(bytes).ok())
                .ok_or_else(|| {
                    S3Error::new(400, "InvalidArgument", "The continuation token provided is incorrect")
                        .with("ArgumentName", "continuation-token")
                })?,
        ),
        None => get("start-after").map(str::to_string),
    };
    let shown = |text: &str| escape(&if url { url_encode(text) } else { text.to_string() });
    let mut contents = String::new();
    let mut prefixes = String::new();
    let mut count = 0;
    let mut last: Option<String> = None;
    let mut truncated = false;
    let mut seen_prefix: Option<String> = None;
    for (key, object) in bucket.objects.range::<str, _>((
        after.as_deref().map_or(std::ops::Bound::Unbounded, std::ops::Bound::Excluded),
        std::ops::Bound::Unbounded,
    )) {
        if !key.starts_with(prefix) {
            continue;
        }
        let common = delimiter.and_then(|d| {
            key[prefix.len()..].find(d).map(|at| key[..prefix.len() + at + d.len()].to_string())
        });
        if let Some(common) = &common {
            if seen_prefix.as_deref() == Some(common.as_str())
                || after.as_deref().is_some_and(|a| a.starts_with(common.as_str()))
            {
                continue;
            }
        }
        if count == max_keys {
            truncated = true;
            break;
        }
        count += 1;
        match common {
            Some(common) => {
                prefixes.push_str(&format!(
                    "<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>",
                    shown(&common)
                ));
                last = Some(common.clone());
                seen_prefix = Some(common);
            }
            None => {
                contents.push_str(&format!(
                    "<Contents><Key>{}</Key><LastModified>{}</LastModified><ETag>{}</ETag><ChecksumAlgorithm>{}</ChecksumAlgorithm><ChecksumType>FULL_OBJECT</ChecksumType><Size>{}</Size><StorageClass>STANDARD</StorageClass></Contents>",
                    shown(key),
                    iso(object.last_modified_ms),
                    escape(&object.etag),
                    object.checksum.0.label(),
                    object.body.len()
                ));
                last = Some(key.clone());
            }
        }
    }
    let mut xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListBucketResult xmlns=\"{XMLNS}\"><Name>{}</Name><Prefix>{}</Prefix><KeyCount>{count}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        escape(name),
        shown(prefix)
    );
    if let Some(delimiter) = delimiter {
        xml.push_str(&format!("<Delimiter>{}</Delimiter>", shown(delimiter)));
    }
    xml.push_str(&format!("<IsTruncated>{truncated}</IsTruncated>"));
    if url {
        xml.push_str("<EncodingType>url</EncodingType>");
    }
    if let Some(token) = token {
        xml.push_str(&format!("<ContinuationToken>{}</ContinuationToken>", escape(token)));
    }
    if let Some(start_after) = get("start-after") {
        xml.push_str(&format!("<StartAfter>{}</StartAfter>", shown(start_after)));
    }
    if truncated {
        if let Some(last) = last {
            xml.push_str(&format!(
                "<NextContinuationToken>{}</NextContinuationToken>",
                digest::hex(last.as_bytes())
            ));
        }
    }
    xml.push_str(&contents);
    xml.push_str(&prefixes);
    xml.push_str("</ListBucketResult>");
    Ok(S3Response::xml(xml))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for (name, valid) in [
            ("abc", true),
            ("my-bucket.v2", true),
            ("ab", false),
            ("Upper", false),
            ("-lead", false),
            ("trail-", false),
            ("a..b", false),
            ("192.168.5.4", false),
            ("xn--abc", false),
            ("foo-s3alias", false),
            (&"a".repeat(63), true),
            (&"a".repeat(64), false),
            ("under_score", false),
        ] {
            assert_eq!(is_valid_bucket_name(name), valid, "{name}");
        }
    }

    #[test]
    fn aws_chunked_bodies_decode_with_or_without_signatures() {
        let unsigned = b"5\r\nhello\r\n6\r\n world\r\n0\r\nx-amz-checksum-crc32:DUoRhQ==\r\n\r\n";
        let (payload, trailers) = decode_aws_chunked(unsigned).expect("decodes");
        assert_eq!(payload, b"hello world");
        assert_eq!(trailers, vec![("x-amz-checksum-crc32".to_string(), "DUoRhQ==".to_string())]);
        let signed = b"5;chunk-signature=ab12\r\nhello\r\n0;chunk-signature=cd34\r\nx-amz-checksum-crc32:DUoRhQ==\r\nx-amz-trailer-signature:ef56\r\n\r\n";
        let (payload, trailers) = decode_aws_chunked(signed).expect("decodes");
        assert_eq!(payload, b"hello");
        assert_eq!(trailers.len(), 2);
        assert!(decode_aws_chunked(b"5\r\nhel\r\n0\r\n\r\n").is_err());
        assert!(decode_aws_chunked(b"zz\r\nhello\r\n").is_err());
    }

    #[test]
    fn paths_split_and_decode() {
        assert_eq!(split_path("/b/a%20key/x%2Fy"), Some(("b".into(), "a key/x/y".into())));
        assert_eq!(split_path("/b"), Some(("b".into(), String::new())));
        assert_eq!(split_path("/b/"), Some(("b".into(), String::new())));
        assert_eq!(split_path("/"), None);
        assert_eq!(url_encode("a b/c+d"), "a%20b/c%2Bd");
    }
}
