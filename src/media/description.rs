//! The pipelines' text form: `pipelines/decode.gst` and `pipelines/rtp_opus.gst`, their
//! placeholders, and the conversion of an operator-supplied input (path or URI) into a URI that can
//! be pasted into the decode pipeline safely.

use std::path::Path;

use super::{MediaError, SAMPLE_RATE};

/// A pipeline description shipped with the binary: the single source of that pipeline's shape.
pub(crate) struct Template {
    /// Path in the repository, for messages.
    pub file: &'static str,
    pub text: &'static str,
}

/// Files and URIs: `uridecodebin` and conversion.
pub(crate) const DECODE: Template = Template {
    file: "pipelines/decode.gst",
    text: include_str!("../../pipelines/decode.gst"),
};

/// Live RTP/Opus over UDP.
pub(crate) const RTP_OPUS: Template = Template {
    file: "pipelines/rtp_opus.gst",
    text: include_str!("../../pipelines/rtp_opus.gst"),
};

/// One remote audio track of an SFU room, as a bin linked to a `webrtcbin` source pad.
pub(crate) const WEBRTC_AUDIO: Template = Template {
    file: "pipelines/webrtc_audio.gst",
    text: include_str!("../../pipelines/webrtc_audio.gst"),
};

/// A template with no placeholder of its own (`{rate}` only).
pub(crate) struct NoParams;

impl Placeholders for NoParams {
    fn value(&self, _: &str) -> Option<String> {
        None
    }
}

/// Element names the code looks up in the parsed pipelines (they must exist in the templates).
pub(crate) const DECODER_NAME: &str = "decode";
pub(crate) const SINK_NAME: &str = "sink";

/// The values of one template's placeholders, already in gst-launch syntax (quoted where needed).
/// `{rate}` is common to all templates and filled in by [`render`] itself.
pub(crate) trait Placeholders {
    /// `None` for a name this template does not know.
    fn value(&self, name: &str) -> Option<String>;
}

/// Placeholder values of a decode pipeline instance.
pub(crate) struct Params<'a> {
    /// Already-resolved URI (not yet quoted: quoting happens here).
    pub uri: &'a str,
    pub sync: bool,
}

impl Placeholders for Params<'_> {
    fn value(&self, name: &str) -> Option<String> {
        match name {
            "uri" => Some(quote(self.uri)),
            "sync" => Some(self.sync.to_string()),
            _ => None,
        }
    }
}

/// Strips `#` comment lines and substitutes `{name}` placeholders, in a single left-to-right pass
/// (substituted values are never re-scanned, so a URI containing `{rate}` stays intact).
///
/// Only `{identifier}` is a placeholder; other braces (e.g. caps lists `{ S16LE, F32LE }`) are
/// copied verbatim. An identifier the code does not know is an error, so a typo in the file fails
/// loudly at start instead of reaching `gst_parse_launch` as a mysterious syntax error.
pub(crate) fn render(
    template: &Template,
    params: &impl Placeholders,
) -> Result<String, MediaError> {
    let text: Vec<&str> = template
        .text
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect();
    let text = text.join(" ");

    let mut out = String::with_capacity(text.len() + 64);
    let mut rest = text.as_str();
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if name_len > 0 && after[name_len..].starts_with('}') {
            let name = &after[..name_len];
            let value = if name == "rate" {
                Some(SAMPLE_RATE.to_string())
            } else {
                params.value(name)
            };
            let Some(value) = value else {
                return Err(MediaError::Pipeline(format!(
                    "unknown placeholder {{{name}}} in {}",
                    template.file
                )));
            };
            out.push_str(&value);
            rest = &after[name_len + 1..];
        } else {
            out.push('{');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// Quotes a property value for gst-launch syntax: `"..."` with `\` and `"` backslash-escaped
/// (gst_parse strips the outer quotes, then removes one level of backslash escapes).
pub(crate) fn quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '\\' || c == '"' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

/// The URI scheme of `input` if it looks like a URI (`scheme://...`, or `data:`), per RFC 3986's
/// scheme grammar. Single-letter schemes are refused so that `C:\...`-style paths stay paths.
fn uri_scheme(input: &str) -> Option<&str> {
    let colon = input.find(':')?;
    let scheme = &input[..colon];
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && scheme.len() >= 2;
    let rest = &input[colon + 1..];
    (valid && (rest.starts_with("//") || scheme.eq_ignore_ascii_case("data"))).then_some(scheme)
}

/// Turns what the operator typed into a URI for `uridecodebin`.
///
/// * An existing file path (relative or absolute) becomes a `file://` URI of its absolute path,
///   percent-escaped by GLib (`g_filename_to_uri`).
/// * A `file://` URI is checked for existence like a path.
/// * Any other `scheme://` URI is passed through; the source element reports what it finds.
/// * Anything else that does not exist is [`MediaError::NotFound`], before any pipeline is built.
pub(crate) fn input_to_uri(input: &str) -> Result<String, MediaError> {
    if input.trim().is_empty() {
        return Err(MediaError::NotFound(input.to_owned()));
    }
    let path = Path::new(input);
    if !path.exists()
        && let Some(scheme) = uri_scheme(input)
    {
        if scheme.eq_ignore_ascii_case("file") {
            let (file, _host) = gstreamer::glib::filename_from_uri(input).map_err(|e| {
                MediaError::NotFound(format!("{input} (not a valid file URI: {})", e.message()))
            })?;
            check_file(input, &file)?;
        }
        return Ok(input.to_owned());
    }
    check_file(input, path)?;
    let absolute =
        std::path::absolute(path).map_err(|e| MediaError::NotFound(format!("{input} ({e})")))?;
    gstreamer::glib::filename_to_uri(&absolute, None)
        .map(|uri| uri.to_string())
        .map_err(|e| MediaError::NotAudio {
            input: input.to_owned(),
            detail: format!("cannot express the path as a URI: {}", e.message()),
        })
}

fn check_file(input: &str, path: &Path) -> Result<(), MediaError> {
    match std::fs::metadata(path) {
        Err(_) => Err(MediaError::NotFound(input.to_owned())),
        Ok(meta) if meta.is_dir() => Err(MediaError::NotAudio {
            input: input.to_owned(),
            detail: "is a directory".to_owned(),
        }),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(uri: &str) -> Params<'_> {
        Params { uri, sync: false }
    }

    /// A template from a literal, for the renderer's own tests.
    fn literal(text: &'static str) -> Template {
        Template {
            file: "test.gst",
            text,
        }
    }

    #[test]
    fn template_renders_without_comments_or_placeholders() {
        let text = render(&DECODE, &params("file:///tmp/a.wav")).unwrap();
        assert!(!text.contains('#'), "{text}");
        assert!(!text.contains('{') && !text.contains('}'), "{text}");
        assert!(
            text.starts_with("uridecodebin name=decode uri=\"file:///tmp/a.wav\""),
            "{text}"
        );
        assert!(text.contains("rate=16000,"), "{text}");
        assert!(text.contains("appsink name=sink sync=false"), "{text}");
        let live = render(
            &DECODE,
            &Params {
                uri: "x://y",
                sync: true,
            },
        )
        .unwrap();
        assert!(live.contains("sync=true"), "{live}");
    }

    #[test]
    fn rtp_template_renders() {
        let input = super::super::RtpOpusInput::parse("rtp-opus://[::1]:5004?payload=111")
            .unwrap()
            .unwrap();
        let text = render(&RTP_OPUS, &input).unwrap();
        assert!(!text.contains('#'), "{text}");
        assert!(!text.contains('{') && !text.contains('}'), "{text}");
        assert!(
            text.starts_with("udpsrc name=source address=\"::1\" port=5004 reuse=false"),
            "{text}"
        );
        assert!(text.contains("payload=111\""), "{text}");
        assert!(text.contains("latency=60 drop-on-latency=true"), "{text}");
        assert!(text.contains("rate=16000,"), "{text}");
        assert!(text.contains("appsink name=sink sync=false"), "{text}");
        // The decode placeholders are not the live pipeline's.
        let err = render(&literal("x uri={uri}"), &input).unwrap_err();
        assert!(
            matches!(err, MediaError::Pipeline(ref m) if m.contains("{uri}")),
            "{err}"
        );
    }

    #[test]
    fn substitution_is_single_pass_and_keeps_other_braces() {
        let text = render(
            &literal("a uri={uri} caps=x,f={ A, B } r={rate}"),
            &params("http://h/{rate}"),
        )
        .unwrap();
        assert_eq!(text, "a uri=\"http://h/{rate}\" caps=x,f={ A, B } r=16000");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let err = render(&literal("a x={nope}"), &params("u://")).unwrap_err();
        assert!(
            matches!(err, MediaError::Pipeline(ref m) if m.contains("{nope}") && m.contains("test.gst")),
            "{err}"
        );
    }

    #[test]
    fn quoting_escapes_quotes_and_backslashes() {
        assert_eq!(quote(r#"a"b\c d"#), r#""a\"b\\c d""#);
    }

    #[test]
    fn scheme_detection() {
        assert_eq!(uri_scheme("file:///a.wav"), Some("file"));
        assert_eq!(uri_scheme("https://example.org/a.ogg"), Some("https"));
        assert_eq!(uri_scheme("data:audio/x-wav;base64,AAAA"), Some("data"));
        assert_eq!(uri_scheme("rtsp+tcp://h/x"), Some("rtsp+tcp"));
        assert_eq!(uri_scheme("C:\\x.wav"), None);
        assert_eq!(uri_scheme("notes:today.wav"), None);
        assert_eq!(uri_scheme("/tmp/a.wav"), None);
        assert_eq!(uri_scheme("1x://a"), None);
    }

    #[test]
    fn paths_become_escaped_file_uris() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("my \"odd\" #file%.wav");
        std::fs::write(&file, b"RIFF").unwrap();
        let uri = input_to_uri(file.to_str().unwrap()).unwrap();
        assert!(uri.starts_with("file:///"), "{uri}");
        assert!(uri.ends_with("my%20%22odd%22%20%23file%25.wav"), "{uri}");
        // A file URI round-trips to the same path and is checked like one.
        assert_eq!(input_to_uri(&uri).unwrap(), uri);
        let (back, _) = gstreamer::glib::filename_from_uri(&uri).unwrap();
        assert_eq!(back, file);
    }

    #[test]
    fn relative_paths_are_made_absolute() {
        let uri = input_to_uri("Cargo.toml").unwrap();
        let (back, _) = gstreamer::glib::filename_from_uri(&uri).unwrap();
        assert!(back.is_absolute());
        assert!(back.ends_with("Cargo.toml"));
    }

    #[test]
    fn missing_inputs_are_not_found() {
        for input in [
            "/nonexistent/soustitre/a.wav",
            "no-such-file.wav",
            "",
            "file:///nonexistent/b.wav",
        ] {
            assert!(
                matches!(input_to_uri(input), Err(MediaError::NotFound(_))),
                "{input:?}: {:?}",
                input_to_uri(input)
            );
        }
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            input_to_uri(dir.path().to_str().unwrap()),
            Err(MediaError::NotAudio { .. })
        ));
    }

    #[test]
    fn other_uris_pass_through() {
        assert_eq!(
            input_to_uri("https://example.org/a b.ogg").unwrap(),
            "https://example.org/a b.ogg"
        );
    }
}
