//! Makes gRPC requests whose HTTP/2 `:authority` is a socket path acceptable to our servers.
//!
//! The kubelet dials plugin sockets with grpc-go on the bare socket path, so its requests carry
//! `:authority: /var/lib/kubelet/plugins_registry/….sock`; h2 (under tonic) answers any
//! authority that is not a valid URI authority with RST_STREAM PROTOCOL_ERROR, and the plugin
//! never registers. [`FixAuthority`] wraps each accepted connection: server→client bytes pass
//! untouched; client→server, the connection preface and every frame pass through except
//! HEADERS (+ CONTINUATION), whose header block is decoded with the client's HPACK state,
//! gets `:authority: localhost` in place of an invalid authority, and is re-encoded without
//! touching the server's dynamic table (RFC 7540 §4.1, §6.2, §6.10; RFC 7541).

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::hpack::{self, Decoder, HpackError};

/// The HTTP/2 client connection preface (RFC 7540 §3.5).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What replaces an `:authority` that is not a valid URI authority.
pub const REPLACEMENT_AUTHORITY: &[u8] = b"localhost";

/// The largest frame payload we emit: the initial SETTINGS_MAX_FRAME_SIZE every HTTP/2 peer
/// accepts (RFC 7540 §6.5.2).
pub const MAX_EMITTED_FRAME: usize = 16_384;

/// The largest header block (all fragments of one HEADERS + CONTINUATION run) we buffer.
pub const MAX_HEADER_BLOCK: usize = 1 << 20;

/// The largest dynamic table size the client may set; it bounds the decoder's memory.
pub const MAX_TABLE_SIZE: usize = 1 << 16;

const FRAME_HEADER_LEN: usize = 9;
const TYPE_HEADERS: u8 = 0x1;
const TYPE_CONTINUATION: u8 = 0x9;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;
const FLAG_PADDED: u8 = 0x8;
const FLAG_PRIORITY: u8 = 0x20;

/// Why a client→server byte stream cannot be passed on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("not an HTTP/2 connection preface")]
    BadPreface,
    #[error("HEADERS frame on stream 0")]
    HeadersOnStreamZero,
    #[error("HEADERS frame padding ({pad}) longer than its payload ({len})")]
    BadPadding { pad: usize, len: usize },
    #[error("HEADERS frame with PRIORITY shorter than 5 bytes")]
    ShortPriority,
    #[error("expected CONTINUATION on stream {expected}, got frame type {frame_type:#x} on stream {stream}")]
    ExpectedContinuation { expected: u32, frame_type: u8, stream: u32 },
    #[error("CONTINUATION frame on stream {0} without a HEADERS frame before it")]
    UnexpectedContinuation(u32),
    #[error("header block larger than {MAX_HEADER_BLOCK} bytes")]
    HeaderBlockTooLarge,
    #[error("header block on stream {stream}: {source}")]
    Hpack { stream: u32, source: HpackError },
}

/// A frame header (RFC 7540 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub length: usize,
    pub frame_type: u8,
    pub flags: u8,
    pub stream: u32,
}

impl FrameHeader {
    pub fn parse(bytes: &[u8; FRAME_HEADER_LEN]) -> Self {
        FrameHeader {
            length: usize::from(bytes[0]) << 16 | usize::from(bytes[1]) << 8 | usize::from(bytes[2]),
            frame_type: bytes[3],
            flags: bytes[4],
            // The reserved bit is ignored on receipt.
            stream: u32::from_be_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) & 0x7fff_ffff,
        }
    }

    pub fn write(&self, out: &mut Vec<u8>) {
        let len = self.length as u32;
        out.extend_from_slice(&len.to_be_bytes()[1..]);
        out.push(self.frame_type);
        out.push(self.flags);
        out.extend_from_slice(&self.stream.to_be_bytes());
    }
}

/// A header block being collected from a HEADERS frame and its CONTINUATION frames.
#[derive(Debug)]
struct OpenBlock {
    stream: u32,
    end_stream: bool,
    /// The 5 bytes of stream dependency and weight when the HEADERS frame had PRIORITY.
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Preface,
    FrameHeader,
    /// Forwarding this many more payload bytes of a frame that is not ours to change.
    PassThrough(usize),
    /// Waiting for the whole payload of a HEADERS or CONTINUATION frame.
    HeaderPayload(FrameHeader),
}

/// The client→server rewriter of one connection, independent of any IO.
#[derive(Debug)]
pub struct Rewriter {
    phase: Phase,
    pending: Vec<u8>,
    decoder: Decoder,
    open: Option<OpenBlock>,
    rewritten: u64,
}

impl Default for Rewriter {
    fn default() -> Self {
        Rewriter { phase: Phase::Preface, pending: Vec::new(), decoder: Decoder::new(MAX_TABLE_SIZE), open: None, rewritten: 0 }
    }
}

impl Rewriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many `:authority` fields were replaced so far.
    pub fn rewritten(&self) -> u64 {
        self.rewritten
    }

    /// Whether the stream is between frames (a clean place for the client to stop).
    pub fn at_frame_boundary(&self) -> bool {
        self.phase == Phase::FrameHeader && self.pending.is_empty() && self.open.is_none()
    }

    /// Consumes client bytes `input`, appending what to send to the server to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        loop {
            match self.phase {
                Phase::PassThrough(remaining) => {
                    let n = remaining.min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.phase = if n == remaining { Phase::FrameHeader } else { Phase::PassThrough(remaining - n) };
                    if input.is_empty() {
                        return Ok(());
                    }
                }
                Phase::Preface => {
                    let n = (PREFACE.len() - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if !PREFACE.starts_with(&self.pending) {
                        return Err(FrameError::BadPreface);
                    }
                    if self.pending.len() < PREFACE.len() {
                        return Ok(());
                    }
                    out.extend_from_slice(PREFACE);
                    self.pending.clear();
                    self.phase = Phase::FrameHeader;
                }
                Phase::FrameHeader => {
                    let n = (FRAME_HEADER_LEN - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    let Ok(bytes) = <&[u8; FRAME_HEADER_LEN]>::try_from(&self.pending[..]) else { return Ok(()) };
                    let header = FrameHeader::parse(bytes);
                    self.pending.clear();
                    self.start_frame(header, out)?;
                }
                Phase::HeaderPayload(header) => {
                    let n = (header.length - self.pending.len()).min(input.len());
                    self.pending.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    if self.pending.len() < header.length {
                        return Ok(());
                    }
                    let payload = std::mem::take(&mut self.pending);
                    self.phase = Phase::FrameHeader;
                    self.header_payload(header, &payload, out)?;
                }
            }
        }
    }

    fn start_frame(&mut self, header: FrameHeader, out: &mut Vec<u8>) -> Result<(), FrameError> {
        if let Some(open) = &self.open {
            if header.frame_type != TYPE_CONTINUATION || header.stream != open.stream {
                return Err(FrameError::ExpectedContinuation {
                    expected: open.stream,
                    frame_type: header.frame_type,
                    stream: header.stream,
                });
            }
        }
        match header.frame_type {
            TYPE_HEADERS | TYPE_CONTINUATION => {
                if header.frame_type == TYPE_CONTINUATION && self.open.is_none() {
                    return Err(FrameError::UnexpectedContinuation(header.stream));
                }
                if header.length > MAX_HEADER_BLOCK {
                    return Err(FrameError::HeaderBlockTooLarge);
                }
                // A zero-length payload is complete at once: the feed loop handles it next.
                self.phase = Phase::HeaderPayload(header);
            }
            _ => {
                header.write(out);
                self.phase = Phase::PassThrough(header.length);
            }
        }
        Ok(())
    }

    fn header_payload(&mut self, header: FrameHeader, payload: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
        if header.frame_type == TYPE_HEADERS {
            if header.stream == 0 {
                return Err(FrameError::HeadersOnStreamZero);
            }
            let mut body = payload;
            let mut pad = 0;
            if header.flags & FLAG_PADDED != 0 {
                let (&len, rest) = body.split_first().ok_or(FrameError::BadPadding { pad: 1, len: 0 })?;
                pad = usize::from(len);
                body = rest;
            }
            let mut priority = None;
            if header.flags & FLAG_PRIORITY != 0 {
                let bytes: [u8; 5] = body.get(..5).and_then(|b| b.try_into().ok()).ok_or(FrameError::ShortPriority)?;
                priority = Some(bytes);
                body = &body[5..];
            }
            if pad > body.len() {
                return Err(FrameError::BadPadding { pad, len: payload.len() });
            }
            self.open = Some(OpenBlock {
                stream: header.stream,
                end_stream: header.flags & FLAG_END_STREAM != 0,
                priority,
                fragment: body[..body.len() - pad].to_vec(),
            });
        } else {
            let Some(open) = &mut self.open else { return Err(FrameError::UnexpectedContinuation(header.stream)) };
            open.fragment.extend_from_slice(payload);
            if open.fragment.len() > MAX_HEADER_BLOCK {
                return Err(FrameError::HeaderBlockTooLarge);
            }
        }
        if header.flags & FLAG_END_HEADERS != 0 {
            if let Some(open) = self.open.take() {
                self.finish_block(open, out)?;
            }
        }
        Ok(())
    }

    fn finish_block(&mut self, open: OpenBlock, out: &mut Vec<u8>) -> Result<(), FrameError> {
        let mut fields = self.decoder.decode(&open.fragment).map_err(|source| FrameError::Hpack { stream: open.stream, source })?;
        for field in fields.iter_mut().filter(|f| f.name == b":authority") {
            if !is_valid_authority(&field.value) {
                field.value = REPLACEMENT_AUTHORITY.to_vec();
                self.rewritten += 1;
            }
        }
        let block = hpack::encode_without_indexing(&fields);
        write_header_frames(open.stream, open.end_stream, open.priority, &block, out);
        Ok(())
    }
}

/// Whether h2 would accept `value` as `:authority` (it parses it with the same `http` type).
pub fn is_valid_authority(value: &[u8]) -> bool {
    http::uri::Authority::try_from(value).is_ok()
}

/// Emits `block` as one HEADERS frame (keeping END_STREAM and PRIORITY, no padding) followed by
/// as many CONTINUATION frames as frames of [`MAX_EMITTED_FRAME`] bytes need.
pub fn write_header_frames(stream: u32, end_stream: bool, priority: Option<[u8; 5]>, block: &[u8], out: &mut Vec<u8>) {
    let prefix = priority.map_or(0, |_| 5);
    let first_len = block.len().min(MAX_EMITTED_FRAME - prefix);
    let (first, mut rest) = block.split_at(first_len);
    let mut flags = if end_stream { FLAG_END_STREAM } else { 0 };
    if priority.is_some() {
        flags |= FLAG_PRIORITY;
    }
    if rest.is_empty() {
        flags |= FLAG_END_HEADERS;
    }
    FrameHeader { length: prefix + first.len(), frame_type: TYPE_HEADERS, flags, stream }.write(out);
    if let Some(bytes) = priority {
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(first);
    while !rest.is_empty() {
        let (chunk, tail) = rest.split_at(rest.len().min(MAX_EMITTED_FRAME));
        rest = tail;
        let flags = if rest.is_empty() { FLAG_END_HEADERS } else { 0 };
        FrameHeader { length: chunk.len(), frame_type: TYPE_CONTINUATION, flags, stream }.write(out);
        out.extend_from_slice(chunk);
    }
}

/// A server-side connection whose client→server bytes go through a [`Rewriter`].
#[derive(Debug)]
pub struct FixAuthority<S> {
    inner: S,
    rewriter: Rewriter,
    out: Vec<u8>,
    out_pos: usize,
    scratch: Box<[u8]>,
    eof: bool,
    /// Set when the client sent something malformed: returned once the bytes before it are read.
    failed: Option<FrameError>,
}

impl<S> FixAuthority<S> {
    pub fn new(inner: S) -> Self {
        FixAuthority {
            inner,
            rewriter: Rewriter::new(),
            out: Vec::new(),
            out_pos: 0,
            scratch: vec![0; 16 * 1024].into_boxed_slice(),
            eof: false,
            failed: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for FixAuthority<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if let Some(e) = this.failed.take() {
                return Poll::Ready(Err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            let mut scratch = ReadBuf::new(&mut this.scratch);
            match Pin::new(&mut this.inner).poll_read(cx, &mut scratch) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let filled = scratch.filled();
            if filled.is_empty() {
                if !this.rewriter.at_frame_boundary() && this.rewriter.phase != Phase::Preface {
                    tracing::debug!("HTTP/2 client closed the connection in the middle of a frame");
                }
                this.eof = true;
                continue;
            }
            if let Err(e) = this.rewriter.feed(filled, &mut this.out) {
                tracing::warn!("closing a gRPC connection: {e}");
                this.eof = true;
                this.failed = Some(e);
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FixAuthority<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for FixAuthority<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

/// Fields for tests that play a grpc-go client: a request to `path` with `authority`.
#[cfg(test)]
pub fn grpc_request_fields(path: &str, authority: &str) -> Vec<hpack::Field> {
    use hpack::Field;
    vec![
        Field::new(b":method", b"POST"),
        Field::new(b":scheme", b"http"),
        Field::new(b":path", path.as_bytes()),
        Field::new(b":authority", authority.as_bytes()),
        Field::new(b"content-type", b"application/grpc"),
        Field::new(b"user-agent", b"grpc-go/1.82.1"),
        Field::new(b"te", b"trailers"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kubelet::hpack::{encode_integer, huffman_encode, Field, DEFAULT_TABLE_SIZE};

    const SOCKET: &str = "/var/lib/kubelet/plugins_registry/gpu.nvidia.com-reg.sock";

    /// Encodes like grpc-go: each field as a literal with incremental indexing (static name
    /// index where there is one) and Huffman-coded strings, or as a dynamic-table index once
    /// sent before — so later blocks depend on the client's table.
    struct ClientEncoder {
        sent: Vec<(Vec<u8>, Vec<u8>)>,
    }

    impl ClientEncoder {
        fn encode(&mut self, fields: &[Field]) -> Vec<u8> {
            let mut out = Vec::new();
            for f in fields {
                if let Some(pos) = self.sent.iter().position(|(n, v)| *n == f.name && *v == f.value) {
                    // Newest entry is index 62.
                    encode_integer(&mut out, 0x80, 7, 62 + (self.sent.len() - 1 - pos));
                    continue;
                }
                out.push(0x40);
                for s in [&f.name, &f.value] {
                    let h = huffman_encode(s);
                    encode_integer(&mut out, 0x80, 7, h.len());
                    out.extend_from_slice(&h);
                }
                self.sent.push((f.name.clone(), f.value.clone()));
            }
            out
        }
    }

    /// Frames as (header, payload).
    type Frames = Vec<(FrameHeader, Vec<u8>)>;

    /// Splits a client byte stream into frames.
    fn frames(mut bytes: &[u8]) -> Frames {
        let mut frames = Vec::new();
        while !bytes.is_empty() {
            let header = FrameHeader::parse(bytes[..9].try_into().unwrap());
            frames.push((header, bytes[9..9 + header.length].to_vec()));
            bytes = &bytes[9 + header.length..];
        }
        frames
    }

    fn frame(frame_type: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        FrameHeader { length: payload.len(), frame_type, flags, stream }.write(&mut out);
        out.extend_from_slice(payload);
        out
    }

    /// Feeds `input` in chunks of `chunk` bytes.
    fn run(input: &[u8], chunk: usize) -> Result<Vec<u8>, FrameError> {
        let mut rewriter = Rewriter::new();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            rewriter.feed(piece, &mut out)?;
        }
        Ok(out)
    }

    /// Decodes the header blocks of server-bound output (one decoder: the server's view).
    fn server_view(output: &[u8]) -> (Vec<Vec<Field>>, Frames) {
        assert_eq!(&output[..24], PREFACE);
        let all = frames(&output[24..]);
        let mut decoder = Decoder::new(DEFAULT_TABLE_SIZE);
        let mut blocks = Vec::new();
        let mut block = Vec::new();
        for (h, p) in &all {
            match h.frame_type {
                TYPE_HEADERS => {
                    let start = if h.flags & FLAG_PRIORITY != 0 { 5 } else { 0 };
                    assert_eq!(h.flags & FLAG_PADDED, 0, "padding dropped");
                    block = p[start..].to_vec();
                }
                TYPE_CONTINUATION => block.extend_from_slice(p),
                _ => continue,
            }
            if h.flags & FLAG_END_HEADERS != 0 {
                blocks.push(decoder.decode(&block).unwrap());
            }
        }
        assert_eq!(decoder.table_len(), 0, "the server's dynamic table is never used");
        (blocks, all)
    }

    fn authority(fields: &[Field]) -> String {
        String::from_utf8(fields.iter().find(|f| f.name == b":authority").unwrap().value.clone()).unwrap()
    }

    #[test]
    fn frame_headers_round_trip() {
        let header = FrameHeader { length: 0x01_02_03, frame_type: 0x9, flags: 0x25, stream: 0x7fff_fffe };
        let mut out = Vec::new();
        header.write(&mut out);
        assert_eq!(out, [0x01, 0x02, 0x03, 0x09, 0x25, 0x7f, 0xff, 0xff, 0xfe]);
        assert_eq!(FrameHeader::parse(out[..].try_into().unwrap()), header);
        // The reserved bit is ignored.
        out[5] |= 0x80;
        assert_eq!(FrameHeader::parse(out[..].try_into().unwrap()).stream, 0x7fff_fffe);
    }

    #[test]
    fn authority_validity_follows_h2() {
        for ok in ["localhost", "localhost:50051", "[::1]:80", "gpu.nvidia.com", "user@host:1"] {
            assert!(is_valid_authority(ok.as_bytes()), "{ok}");
        }
        for bad in [SOCKET, "/tmp/x.sock", "a b", ""] {
            assert!(!is_valid_authority(bad.as_bytes()), "{bad}");
        }
    }

    /// Several requests on one connection, Huffman-coded with the client's dynamic table, mixed
    /// with SETTINGS/WINDOW_UPDATE/DATA frames, fed in every chunk size: the socket-path authority
    /// becomes localhost, everything else is unchanged, other frames pass byte for byte.
    #[test]
    fn rewrites_socket_path_authority_across_requests_in_any_chunking() {
        let mut client = ClientEncoder { sent: Vec::new() };
        let mut input = PREFACE.to_vec();
        let settings = frame(0x4, 0, 0, &[0, 2, 0, 0, 0, 0]);
        input.extend_from_slice(&settings);
        input.extend_from_slice(&frame(0x8, 0, 0, &[0, 0, 0x10, 0]));
        let mut expected_fields = Vec::new();
        let mut data_frames = Vec::new();
        for (i, method) in ["/pluginregistration.Registration/GetInfo", "/pluginregistration.Registration/NotifyRegistrationStatus"]
            .iter()
            .chain(std::iter::once(&"/pluginregistration.Registration/GetInfo"))
            .enumerate()
        {
            let stream = 1 + 2 * i as u32;
            let fields = grpc_request_fields(method, SOCKET);
            input.extend_from_slice(&frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &client.encode(&fields)));
            let data = frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 2, 0x08, 0x01]);
            input.extend_from_slice(&data);
            data_frames.push(data);
            let mut fixed = fields.clone();
            fixed[3].value = b"localhost".to_vec();
            expected_fields.push(fixed);
        }
        let reference = run(&input, input.len()).unwrap();
        for chunk in [1, 2, 3, 7, 9, 10, 64, 1000] {
            assert_eq!(run(&input, chunk).unwrap(), reference, "chunk size {chunk}");
        }
        let (blocks, all) = server_view(&reference);
        assert_eq!(blocks, expected_fields);
        assert_eq!(frame(all[0].0.frame_type, all[0].0.flags, all[0].0.stream, &all[0].1), settings);
        let data_out: Vec<Vec<u8>> = all.iter().filter(|(h, _)| h.frame_type == 0).map(|(h, p)| frame(0, h.flags, h.stream, p)).collect();
        assert_eq!(data_out, data_frames);
    }

    #[test]
    fn keeps_valid_authorities_end_stream_and_priority_and_drops_padding() {
        let fields = grpc_request_fields("/x.Y/Z", "localhost:1234");
        let block = hpack::encode_without_indexing(&fields);
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 200]); // exclusive dependency on stream 1, weight 200
        payload.extend_from_slice(&block);
        payload.extend_from_slice(&[0, 0, 0]);
        let mut input = PREFACE.to_vec();
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_END_STREAM | FLAG_PADDED | FLAG_PRIORITY, 3, &payload));
        let out = run(&input, 5).unwrap();
        let (blocks, all) = server_view(&out);
        assert_eq!(authority(&blocks[0]), "localhost:1234");
        assert_eq!(all[0].0.flags, FLAG_END_HEADERS | FLAG_END_STREAM | FLAG_PRIORITY);
        assert_eq!(all[0].0.stream, 3);
        assert_eq!(&all[0].1[..5], [0x80, 0, 0, 1, 200]);
    }

    /// A block split over HEADERS + CONTINUATION frames is joined; one larger than a frame is
    /// split again into CONTINUATION frames of at most 16,384 bytes.
    #[test]
    fn joins_continuations_and_splits_large_blocks() {
        let mut fields = grpc_request_fields("/x.Y/Z", SOCKET);
        fields.push(Field::new(b"x-big", &vec![b'a'; 40_000]));
        let block = ClientEncoder { sent: Vec::new() }.encode(&fields);
        let mut input = PREFACE.to_vec();
        let pieces: Vec<&[u8]> = block.chunks(10_000).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let last = if i == pieces.len() - 1 { FLAG_END_HEADERS } else { 0 };
            let (ty, flags) = if i == 0 { (TYPE_HEADERS, FLAG_PRIORITY | last) } else { (TYPE_CONTINUATION, last) };
            let mut payload = if i == 0 { vec![0, 0, 0, 0, 15] } else { vec![] };
            payload.extend_from_slice(piece);
            input.extend(frame(ty, flags, 5, &payload));
        }
        let out = run(&input, 4096).unwrap();
        let (blocks, all) = server_view(&out);
        assert_eq!(authority(&blocks[0]), "localhost");
        assert_eq!(blocks[0][7].value.len(), 40_000);
        assert!(all.len() >= 3);
        assert_eq!(all[0].0.frame_type, TYPE_HEADERS);
        assert_eq!(all[0].0.flags, FLAG_PRIORITY);
        assert!(all.iter().all(|(h, _)| h.length <= MAX_EMITTED_FRAME && h.stream == 5));
        assert!(all[1..].iter().all(|(h, _)| h.frame_type == TYPE_CONTINUATION));
        assert_eq!(all.iter().filter(|(h, _)| h.flags & FLAG_END_HEADERS != 0).count(), 1);
        assert_ne!(all.last().unwrap().0.flags & FLAG_END_HEADERS, 0);
    }

    #[test]
    fn honours_client_table_size_updates() {
        let mut input = PREFACE.to_vec();
        let fields = grpc_request_fields("/x.Y/Z", SOCKET);
        let mut client = ClientEncoder { sent: Vec::new() };
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &client.encode(&fields)));
        // Size update to 0 evicts everything; the client then re-sends literals.
        let mut second = vec![0x20];
        client.sent.clear();
        second.extend(client.encode(&fields));
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 3, &second));
        let (blocks, _) = server_view(&run(&input, 1).unwrap());
        assert_eq!(blocks.len(), 2);
        assert!(blocks.iter().all(|b| authority(b) == "localhost"));
        // Referring to an evicted entry is an error, not a panic.
        let mut bad = PREFACE.to_vec();
        bad.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x20, 0xbe]));
        assert_eq!(run(&bad, 100), Err(FrameError::Hpack { stream: 1, source: HpackError::BadIndex(62) }));
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert_eq!(run(b"GET / HTTP/1.1\r\n", 3), Err(FrameError::BadPreface));
        let with = |frames: &[Vec<u8>]| {
            let mut input = PREFACE.to_vec();
            frames.iter().for_each(|f| input.extend_from_slice(f));
            run(&input, 7)
        };
        let block = hpack::encode_without_indexing(&grpc_request_fields("/a/b", SOCKET));
        assert_eq!(with(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 0, &block)]), Err(FrameError::HeadersOnStreamZero));
        assert_eq!(with(&[frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 1, &block)]), Err(FrameError::UnexpectedContinuation(1)));
        assert_eq!(
            with(&[frame(TYPE_HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")]),
            Err(FrameError::ExpectedContinuation { expected: 1, frame_type: 0, stream: 1 })
        );
        assert_eq!(
            with(&[frame(TYPE_HEADERS, 0, 1, &block), frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 3, b"")]),
            Err(FrameError::ExpectedContinuation { expected: 1, frame_type: TYPE_CONTINUATION, stream: 3 })
        );
        assert_eq!(
            with(&[frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PADDED, 1, &[9, 1, 2])]),
            Err(FrameError::BadPadding { pad: 9, len: 3 })
        );
        assert_eq!(with(&[frame(TYPE_HEADERS, FLAG_END_HEADERS | FLAG_PRIORITY, 1, &[1, 2])]), Err(FrameError::ShortPriority));
        assert_eq!(
            with(&[frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &[0x82, 0x41, 0x7f])]),
            Err(FrameError::Hpack { stream: 1, source: HpackError::Truncated })
        );
        let mut huge = Vec::new();
        FrameHeader { length: MAX_HEADER_BLOCK + 1, frame_type: TYPE_HEADERS, flags: 0, stream: 1 }.write(&mut huge);
        assert_eq!(with(&[huge]), Err(FrameError::HeaderBlockTooLarge));
        // Arbitrary bytes after the preface never panic.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..200 {
            let mut input = PREFACE.to_vec();
            for _ in 0..64 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                input.push(seed as u8);
            }
            let _ = run(&input, 5);
        }
    }

    /// Through a real socket pair and tonic-style reads: the wrapper delivers the rewritten
    /// stream and fails the read on malformed input.
    #[tokio::test]
    async fn wrapper_rewrites_and_fails_reads_on_malformed_input() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::net::UnixStream::pair().unwrap();
        let mut server = FixAuthority::new(server);
        let mut input = PREFACE.to_vec();
        let fields = grpc_request_fields("/x.Y/Z", SOCKET);
        input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, 1, &ClientEncoder { sent: Vec::new() }.encode(&fields)));
        let expected = run(&input, input.len()).unwrap();
        client.write_all(&input).await.unwrap();
        client.write_all(&frame(TYPE_CONTINUATION, FLAG_END_HEADERS, 9, b"")).await.unwrap();
        let mut got = vec![0; expected.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, expected);
        let err = server.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        // Server→client bytes pass through.
        server.write_all(b"pong").await.unwrap();
        let mut back = [0; 4];
        client.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"pong");
    }

    /// Cost of the rewrite per request (docs/benchmarks.md): a grpc-go-style connection of many
    /// requests, each HEADERS (dynamic-table indexed after the first) + a small DATA frame.
    #[test]
    #[ignore = "measurement: cargo test --release -p fake-gpu-operator --lib authority_cost -- --ignored --nocapture"]
    fn authority_cost() {
        let requests = 100_000;
        let mut client = ClientEncoder { sent: Vec::new() };
        let mut input = PREFACE.to_vec();
        for i in 0..requests {
            let stream = 1 + 2 * i as u32;
            let fields = grpc_request_fields("/k8s.io.kubelet.pkg.apis.dra.v1.DRAPlugin/NodePrepareResources", SOCKET);
            input.extend(frame(TYPE_HEADERS, FLAG_END_HEADERS, stream, &client.encode(&fields)));
            input.extend(frame(0x0, FLAG_END_STREAM, stream, &[0, 0, 0, 0, 0]));
        }
        let start = std::time::Instant::now();
        let out = run(&input, 16 * 1024).unwrap();
        let elapsed = start.elapsed();
        assert!(out.len() > input.len());
        println!(
            "{requests} requests, {} bytes in, {} out: {:.2} us per request",
            input.len(),
            out.len(),
            elapsed.as_secs_f64() * 1e6 / requests as f64
        );
    }
}
