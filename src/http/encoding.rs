//! Compressed request bodies (`Content-Encoding: zstd | gzip | deflate`): the one place a body's content
//! coding is named and undone, for every route.
//!
//! # Design
//! A decompression bomb (a few bytes that inflate to gigabytes) must cost no more than the limit it is
//! held to, so the body is decoded in steps ([`Decompressor::step`]), each writing at most the room it
//! is given: the caller reserves memory before each step, and stops the body at its size limit without
//! ever holding more than the limit and one step. The decoders' own memory is bounded and known before
//! they allocate it ([`Decompressor::state_bytes`]): inflating keeps a 32 KiB window; a zstd frame names
//! its window in its header, read before the frame is decoded, and one over [`ZSTD_MAX_WINDOW_LOG`] is
//! refused. zstd frames are decoded one at a time (concatenated frames are valid zstd), so each frame's
//! window is known before its decoder needs it.
//!
//! The codecs are maintained crates: `zstd` (libzstd) and `flate2`. HTTP's `deflate` is the zlib
//! format (RFC 9110 §8.4.1.2); raw deflate streams, which some clients send under that name, are
//! recognised by their missing zlib header and inflated too.

use std::io::Read;

/// The content codings the gateway decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Zstd,
    Gzip,
    Deflate,
}

impl Coding {
    pub fn name(self) -> &'static str {
        match self {
            Self::Zstd => "zstd",
            Self::Gzip => "gzip",
            Self::Deflate => "deflate",
        }
    }
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A coding the gateway does not decode (the header's value, as sent).
    #[error("Unsupported Content-Encoding {0:?}: this gateway decodes zstd, gzip and deflate (one coding).")]
    Unsupported(String),
    /// The bytes are not what their coding says.
    #[error("The request body is not valid {coding}: {why}")]
    Corrupt { coding: &'static str, why: String },
}

/// The coding a `Content-Encoding` value asks to undo; `None` for `identity` (or nothing). A list of
/// several codings is refused: no client this gateway serves stacks them.
pub fn parse_content_encoding(value: &str) -> Result<Option<Coding>, DecodeError> {
    let mut found = None;
    for token in value.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let coding = if token.eq_ignore_ascii_case("identity") {
            continue;
        } else if token.eq_ignore_ascii_case("zstd") {
            Coding::Zstd
        } else if token.eq_ignore_ascii_case("gzip") || token.eq_ignore_ascii_case("x-gzip") {
            Coding::Gzip
        } else if token.eq_ignore_ascii_case("deflate") {
            Coding::Deflate
        } else {
            return Err(DecodeError::Unsupported(bounded(value)));
        };
        if found.replace(coding).is_some() {
            return Err(DecodeError::Unsupported(bounded(value)));
        }
    }
    Ok(found)
}

fn bounded(s: &str) -> String {
    s.chars().take(64).collect()
}

/// The largest zstd window a frame may ask for: 8 MiB, what the zstd format asks every decoder to
/// support (RFC 8878 §3.1.1.1.2). A frame asking for more is refused before anything is allocated.
pub const ZSTD_MAX_WINDOW_LOG: u32 = 23;
/// What a zstd decoder holds besides its window: two blocks of at most 128 KiB, and its context.
const ZSTD_STATE_BYTES: usize = 2 * 128 * 1024 + 64 * 1024;
/// What an inflater holds: its 32 KiB window and its tables.
const INFLATE_STATE_BYTES: usize = 64 * 1024;
const ZSTD_MAGIC: u32 = 0xFD2F_B528;

/// The memory a zstd frame at the start of `input` makes its decoder allocate: the window its header
/// names (no larger than its content), or an error for a header that is not one or asks too much.
fn zstd_frame_bytes(input: &[u8]) -> Result<usize, String> {
    let magic = input.get(..4).map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]));
    match magic {
        // A skippable frame: nothing is decoded.
        Some(m) if m & 0xFFFF_FFF0 == 0x184D_2A50 => return Ok(0),
        Some(ZSTD_MAGIC) => {}
        _ => return Err("not a zstd frame".into()),
    }
    let descriptor = *input.get(4).ok_or("truncated frame header")?;
    let single_segment = descriptor & 0x20 != 0;
    let content = zstd::zstd_safe::get_frame_content_size(input).ok().flatten();
    let window = if single_segment {
        // The window is the content itself.
        content.ok_or("truncated frame header")?
    } else {
        let w = *input.get(5).ok_or("truncated frame header")?;
        let log = 10 + u32::from(w >> 3);
        if log > ZSTD_MAX_WINDOW_LOG {
            return Err(format!(
                "the frame asks for a window of 2^{log} bytes (at most 2^{ZSTD_MAX_WINDOW_LOG})"
            ));
        }
        let base = 1u64 << log;
        let window = base + (base / 8) * u64::from(w & 7);
        content.map_or(window, |c| c.min(window))
    };
    if window > 1 << ZSTD_MAX_WINDOW_LOG {
        return Err(format!(
            "the frame asks for a window of {window} bytes (at most 2^{ZSTD_MAX_WINDOW_LOG})"
        ));
    }
    Ok(usize::try_from(window).unwrap_or(usize::MAX))
}

enum Inner<'a> {
    /// The rest of the input, and the decoder of the frame at its start once it is opened.
    Zstd {
        rest: &'a [u8],
        frame: Option<Box<zstd::stream::read::Decoder<'static, &'a [u8]>>>,
    },
    Gzip(Box<flate2::read::MultiGzDecoder<&'a [u8]>>),
    Zlib(Box<flate2::read::ZlibDecoder<&'a [u8]>>),
    Raw(Box<flate2::read::DeflateDecoder<&'a [u8]>>),
}

/// One body being decoded, step by step (see the module docs).
pub struct Decompressor<'a> {
    coding: Coding,
    inner: Inner<'a>,
    /// The most memory the decoder has needed so far.
    state_bytes: usize,
}

impl std::fmt::Debug for Decompressor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Decompressor").field("coding", &self.coding).finish()
    }
}

/// Output written per step when the room allows it.
pub const STEP_BYTES: usize = 64 * 1024;

impl<'a> Decompressor<'a> {
    pub fn new(coding: Coding, input: &'a [u8]) -> Self {
        let inner = match coding {
            Coding::Zstd => Inner::Zstd { rest: input, frame: None },
            Coding::Gzip => Inner::Gzip(Box::new(flate2::read::MultiGzDecoder::new(input))),
            // A zlib stream starts with a method byte of 8 and a header whose 16 bits are a multiple of 31.
            Coding::Deflate
                if input.len() >= 2
                    && input[0] & 0x0F == 8
                    && (u16::from(input[0]) << 8 | u16::from(input[1])) % 31 == 0 =>
            {
                Inner::Zlib(Box::new(flate2::read::ZlibDecoder::new(input)))
            }
            Coding::Deflate => Inner::Raw(Box::new(flate2::read::DeflateDecoder::new(input))),
        };
        let state_bytes = if coding == Coding::Zstd { 0 } else { INFLATE_STATE_BYTES };
        Self { coding, inner, state_bytes }
    }

    /// The memory the decoder holds (or is about to allocate for the frame it opens next), besides its
    /// output: reserve it before the next [`Decompressor::step`].
    pub fn state_bytes(&mut self) -> Result<usize, DecodeError> {
        if let Inner::Zstd { rest, frame: None } = &self.inner
            && !rest.is_empty()
        {
            let frame = zstd_frame_bytes(rest).map_err(|why| self.corrupt(why))?;
            self.state_bytes = self.state_bytes.max(frame + ZSTD_STATE_BYTES);
        }
        Ok(self.state_bytes)
    }

    fn corrupt(&self, why: impl std::fmt::Display) -> DecodeError {
        DecodeError::Corrupt { coding: self.coding.name(), why: why.to_string() }
    }

    /// Appends at most `room` more decoded bytes to `out`; true once the body is decoded to its end.
    pub fn step(&mut self, out: &mut Vec<u8>, room: usize) -> Result<bool, DecodeError> {
        let want = room.min(STEP_BYTES);
        let start = out.len();
        out.resize(start + want, 0);
        let res = self.read_into(&mut out[start..]);
        let (n, done) = match res {
            Ok(r) => r,
            Err(e) => {
                out.truncate(start);
                return Err(self.corrupt(e));
            }
        };
        out.truncate(start + n);
        Ok(done)
    }

    /// Fills `buf` as far as the decoder goes; the bytes written and whether the input is done.
    fn read_into(&mut self, buf: &mut [u8]) -> Result<(usize, bool), String> {
        let mut n = 0;
        while n < buf.len() {
            let read = match &mut self.inner {
                Inner::Zstd { rest, frame } => {
                    let decoder = match frame {
                        Some(d) => d,
                        None if rest.is_empty() => return Ok((n, true)),
                        None => {
                            zstd_frame_bytes(rest)?;
                            let mut d = zstd::stream::read::Decoder::with_buffer(*rest)
                                .map_err(|e| e.to_string())?
                                .single_frame();
                            d.window_log_max(ZSTD_MAX_WINDOW_LOG).map_err(|e| e.to_string())?;
                            frame.insert(Box::new(d))
                        }
                    };
                    match decoder.read(&mut buf[n..]).map_err(|e| e.to_string())? {
                        0 => {
                            // The frame ended: the next one (if any) starts where it stopped reading.
                            let before = rest.len();
                            if let Some(d) = frame.take() {
                                *rest = (*d).finish();
                            }
                            if rest.len() == before {
                                return Err("a frame that ends without its input".into());
                            }
                            continue;
                        }
                        k => k,
                    }
                }
                Inner::Gzip(d) => d.read(&mut buf[n..]).map_err(|e| e.to_string())?,
                Inner::Zlib(d) => d.read(&mut buf[n..]).map_err(|e| e.to_string())?,
                Inner::Raw(d) => d.read(&mut buf[n..]).map_err(|e| e.to_string())?,
            };
            if read == 0 {
                return Ok((n, true));
            }
            n += read;
        }
        Ok((n, false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Decodes all of `input` with at most `max` bytes of output; `None` when it is larger.
    fn decode(coding: Coding, input: &[u8], max: usize) -> Result<Option<Vec<u8>>, DecodeError> {
        let mut d = Decompressor::new(coding, input);
        let mut out = Vec::new();
        loop {
            d.state_bytes()?;
            let room = max + 1 - out.len();
            let done = d.step(&mut out, room)?;
            if out.len() > max {
                return Ok(None);
            }
            if done {
                return Ok(Some(out));
            }
        }
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn the_header_names_one_coding_or_identity() {
        assert_eq!(parse_content_encoding("zstd"), Ok(Some(Coding::Zstd)));
        assert_eq!(parse_content_encoding(" GZIP "), Ok(Some(Coding::Gzip)));
        assert_eq!(parse_content_encoding("identity, deflate"), Ok(Some(Coding::Deflate)));
        assert_eq!(parse_content_encoding("identity"), Ok(None));
        assert_eq!(parse_content_encoding(""), Ok(None));
        assert!(matches!(parse_content_encoding("br"), Err(DecodeError::Unsupported(v)) if v == "br"));
        assert!(matches!(parse_content_encoding("gzip, zstd"), Err(DecodeError::Unsupported(_))));
    }

    #[test]
    fn every_coding_round_trips_across_steps() {
        let data: Vec<u8> = (0..300_000u32).flat_map(|i| (i % 251).to_le_bytes()).collect();
        let zstd = zstd::encode_all(&data[..], 3).unwrap();
        let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zlib.write_all(&data).unwrap();
        let mut raw = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(&data).unwrap();
        for (coding, input) in [
            (Coding::Zstd, zstd),
            (Coding::Gzip, gzip(&data)),
            (Coding::Deflate, zlib.finish().unwrap()),
            (Coding::Deflate, raw.finish().unwrap()),
        ] {
            assert_eq!(decode(coding, &input, data.len()).unwrap().as_deref(), Some(&data[..]), "{coding:?}");
            assert_eq!(decode(coding, &input, data.len() - 1).unwrap(), None, "{coding:?} over its cap");
        }
    }

    #[test]
    fn concatenated_zstd_frames_and_gzip_members_are_one_body() {
        let mut z = zstd::encode_all(&b"hello, "[..], 1).unwrap();
        z.extend(zstd::encode_all(&b"world"[..], 19).unwrap());
        assert_eq!(decode(Coding::Zstd, &z, 100).unwrap().unwrap(), b"hello, world");
        let mut g = gzip(b"hello, ");
        g.extend(gzip(b"world"));
        assert_eq!(decode(Coding::Gzip, &g, 100).unwrap().unwrap(), b"hello, world");
    }

    #[test]
    fn a_bomb_stops_at_its_cap_within_one_step() {
        let zeros = vec![0u8; 64 << 20];
        let bomb = zstd::encode_all(&zeros[..], 19).unwrap();
        assert!(bomb.len() < 8 * 1024, "{}", bomb.len());
        let mut d = Decompressor::new(Coding::Zstd, &bomb);
        let state = d.state_bytes().unwrap();
        assert!(state <= (1 << ZSTD_MAX_WINDOW_LOG) + ZSTD_STATE_BYTES, "{state}");
        let mut out = Vec::new();
        let cap = 1 << 20;
        while out.len() <= cap {
            let room = cap + 1 - out.len();
            assert!(!d.step(&mut out, room).unwrap());
        }
        assert_eq!(out.len(), cap + 1, "never more than the room given");
        assert!(out.capacity() < 2 * cap + STEP_BYTES, "{}", out.capacity());
    }

    #[test]
    fn a_frame_asking_for_a_huge_window_is_refused_before_it_is_decoded() {
        // Magic, a descriptor without single-segment or content size, a window of 2^31.
        let mut frame = ZSTD_MAGIC.to_le_bytes().to_vec();
        frame.extend_from_slice(&[0x00, (31 - 10) << 3, 0, 0, 0]);
        let err = Decompressor::new(Coding::Zstd, &frame).state_bytes().unwrap_err();
        assert!(
            matches!(&err, DecodeError::Corrupt { coding: "zstd", why } if why.contains("window")),
            "{err}"
        );
    }

    #[test]
    fn corrupt_bodies_are_errors_that_name_their_coding() {
        for coding in [Coding::Zstd, Coding::Gzip, Coding::Deflate] {
            let err = decode(coding, b"{\"model\":\"not compressed\"}", 1000).unwrap_err();
            assert!(matches!(&err, DecodeError::Corrupt { coding: c, .. } if *c == coding.name()), "{err}");
        }
        let mut cut = gzip(&[7u8; 10_000]);
        cut.truncate(cut.len() / 2);
        assert!(decode(Coding::Gzip, &cut, 100_000).is_err(), "a truncated body is corrupt");
        let z = zstd::encode_all(&[7u8; 10_000][..], 3).unwrap();
        assert!(decode(Coding::Zstd, &z[..z.len() - 3], 100_000).is_err());
    }
}
