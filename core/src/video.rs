//! Video in and out through an `ffmpeg` child process and raw RGB pipes: frames stream one at
//! a time (no temporary image files, constant memory), from files, `rtsp://` / `http://`
//! streams and V4L2 cameras (`/dev/videoN`), and annotated frames stream into an H.264 file.
//! A folder of images is a source too ([`FrameSource`]), read in name order.
//! The binary itself carries no codecs; ffmpeg (Debian's `ffmpeg` package) is found on PATH.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use image::RgbImage;

use crate::error::{CoreError, Result};

/// A source's picture size and frame rate, from ffprobe (or the `--fps` asked for).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VideoInfo {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
}

#[derive(Debug, Clone)]
pub struct VideoFrame {
    pub image: RgbImage,
    /// 0-based frame number in the decoded stream.
    pub index: u64,
    /// Media time for files (`index / fps`); seconds since the source opened for live sources.
    pub time_s: f64,
    /// When the frame's last byte arrived from the decoder.
    pub captured: Instant,
}

#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Resample to this frame rate (ffmpeg's `fps` filter).
    pub fps: Option<f64>,
    /// Deliver a file at its own frame rate, as a camera would (`-re`).
    pub realtime: bool,
}

/// Whether ffmpeg is on PATH (video input and output need it).
pub fn ffmpeg_available() -> bool {
    Command::new("ffmpeg").arg("-version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Live sources: a camera or a network stream (their time is the wall clock).
pub fn is_live(source: &str) -> bool {
    source.starts_with("/dev/video") || source.contains("://")
}

/// How long a network source may stay silent before ffmpeg gives up on it (microseconds).
const IO_TIMEOUT_US: &str = "5000000";

fn input_args(source: &str) -> Vec<String> {
    let mut args = Vec::new();
    if source.starts_with("/dev/video") {
        args.extend(["-f", "v4l2"].map(String::from));
    } else if source.starts_with("rtsp://") {
        // TCP: no smeared frames from lost UDP packets on a farm's Wi-Fi. A socket silent for
        // IO_TIMEOUT ends ffmpeg, so a dead camera is noticed (and retried) instead of waited on.
        args.extend(["-rtsp_transport", "tcp", "-timeout", IO_TIMEOUT_US].map(String::from));
    } else if source.contains("://") {
        args.extend(["-rw_timeout", IO_TIMEOUT_US].map(String::from));
    }
    args.push("-i".into());
    args.push(source.into());
    args
}

/// `"30000/1001"` → 29.97.
fn parse_rate(r: &str) -> Option<f64> {
    let (n, d) = r.split_once('/').unwrap_or((r, "1"));
    let (n, d): (f64, f64) = (n.trim().parse().ok()?, d.trim().parse().ok()?);
    (n > 0.0 && d > 0.0).then_some(n / d)
}

fn ffmpeg_missing(tool: &str, source: &str, e: std::io::Error) -> CoreError {
    CoreError::Argument(format!(
        "{source}: video input needs ffmpeg on PATH (apt install ffmpeg; running {tool}: {e}), or give a folder of images"
    ))
}

/// Picture size and frame rate of `source`'s first video stream.
pub fn probe(source: &str) -> Result<VideoInfo> {
    let mut cmd = Command::new("ffprobe");
    cmd.args([
        "-v",
        "error",
        "-select_streams",
        "v:0",
        "-show_entries",
        "stream=width,height,avg_frame_rate,r_frame_rate",
    ])
    .args(["-of", "csv=p=0"]);
    let args = input_args(source);
    // ffprobe takes the source without -i.
    cmd.args(args.iter().filter(|a| *a != "-i"));
    let o = cmd.output().map_err(|e| ffmpeg_missing("ffprobe", source, e))?;
    let text = String::from_utf8_lossy(&o.stdout);
    let fields: Vec<&str> = text.lines().next().unwrap_or("").split(',').map(str::trim).collect();
    let parsed = (fields.len() >= 4)
        .then(|| {
            let (w, h) = (fields[0].parse::<u32>().ok()?, fields[1].parse::<u32>().ok()?);
            let fps = parse_rate(fields[2]).or_else(|| parse_rate(fields[3]))?;
            (w > 0 && h > 0).then_some(VideoInfo { width: w, height: h, fps })
        })
        .flatten();
    parsed.ok_or_else(|| {
        CoreError::Argument(format!(
            "{source}: ffprobe found no video stream (it said {:?}{})",
            text.trim(),
            String::from_utf8_lossy(&o.stderr).trim().lines().last().map(|l| format!(", {l}")).unwrap_or_default()
        ))
    })
}

/// The last lines ffmpeg wrote to stderr, kept by a thread so its pipe never fills.
fn collect_stderr(child: &mut Child) -> Arc<Mutex<String>> {
    let tail = Arc::new(Mutex::new(String::new()));
    if let Some(mut err) = child.stderr.take() {
        let keep = tail.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let mut t = keep.lock().unwrap_or_else(|p| p.into_inner());
                t.push_str(&String::from_utf8_lossy(&buf[..n]));
                if t.len() > 4000 {
                    let cut = t.len() - 2000;
                    let cut = (cut..t.len()).find(|&i| t.is_char_boundary(i)).unwrap_or(t.len());
                    t.replace_range(..cut, "");
                }
            }
        });
    }
    tail
}

/// Frames of one source, decoded by ffmpeg into an RGB pipe.
pub struct VideoReader {
    source: String,
    child: Child,
    stdout: ChildStdout,
    stderr: Arc<Mutex<String>>,
    info: VideoInfo,
    live: bool,
    opened: Instant,
    index: u64,
}

impl VideoReader {
    pub fn open(source: &str, opts: &ReadOptions) -> Result<VideoReader> {
        if let Some(f) = opts.fps {
            if !(f > 0.0 && f.is_finite()) {
                return Err(CoreError::Argument(format!("--fps {f} must be > 0")));
            }
        }
        let mut info = probe(source)?;
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        if opts.realtime {
            cmd.arg("-re");
        }
        cmd.args(input_args(source));
        if let Some(f) = opts.fps {
            cmd.args(["-vf", &format!("fps={f}")]);
            info.fps = f;
        }
        cmd.args(["-an", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"]);
        // Its own process group: a Ctrl-C at the terminal reaches fieldkit, which stops the
        // loop and finishes its outputs, not ffmpeg mid-stream (dropping the reader ends it).
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ffmpeg_missing("ffmpeg", source, e))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = collect_stderr(&mut child);
        Ok(VideoReader {
            source: source.into(),
            child,
            stdout,
            stderr,
            info,
            live: is_live(source),
            opened: Instant::now(),
            index: 0,
        })
    }

    pub fn info(&self) -> VideoInfo {
        self.info
    }

    /// The next frame; `None` at the end of the stream. A stream cut mid-frame, or ffmpeg
    /// failing, is an error with ffmpeg's last words.
    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>> {
        let (w, h) = (self.info.width, self.info.height);
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let mut got = 0;
        while got < buf.len() {
            match self.stdout.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(CoreError::Argument(format!("{}: reading decoded frames: {e}", self.source))),
            }
        }
        if got == 0 {
            let status = self.child.wait().map_err(|e| CoreError::Argument(format!("{}: ffmpeg: {e}", self.source)))?;
            if !status.success() {
                return Err(self.failure(&format!("ffmpeg stopped ({status})")));
            }
            return Ok(None);
        }
        if got < buf.len() {
            let _ = self.child.wait();
            return Err(self.failure(&format!(
                "the stream ended inside frame {} ({got} of {} bytes)",
                self.index,
                buf.len()
            )));
        }
        let captured = Instant::now();
        let time_s = if self.live {
            captured.duration_since(self.opened).as_secs_f64()
        } else {
            self.index as f64 / self.info.fps
        };
        let image = RgbImage::from_raw(w, h, buf).expect("buffer sized w*h*3");
        let frame = VideoFrame { image, index: self.index, time_s, captured };
        self.index += 1;
        Ok(Some(frame))
    }

    fn failure(&self, what: &str) -> CoreError {
        let tail = self.stderr.lock().map(|t| t.trim().to_string()).unwrap_or_default();
        let last = tail.lines().last().unwrap_or("no message");
        CoreError::Argument(format!("{}: {what}: {last}", self.source))
    }
}

impl Drop for VideoReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Frames streamed into an H.264 MP4 by ffmpeg, written under a temporary name and renamed
/// into place when finished: an interrupted run never leaves a truncated file behind.
pub struct VideoWriter {
    path: PathBuf,
    tmp: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    stderr: Arc<Mutex<String>>,
    size: (u32, u32),
}

impl VideoWriter {
    pub fn create(path: &Path, width: u32, height: u32, fps: f64) -> Result<VideoWriter> {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "video.mp4".into());
        let tmp = path.with_file_name(format!(".{name}.{}.partial", std::process::id()));
        let mut child = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24"])
            .args(["-s", &format!("{width}x{height}"), "-r", &format!("{fps}"), "-i", "-"])
            // Even sizes for yuv420p; faststart so a player can start before the end.
            .args(["-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2", "-c:v", "libx264", "-pix_fmt", "yuv420p"])
            .args(["-movflags", "+faststart", "-f", "mp4"])
            .arg(&tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| ffmpeg_missing("ffmpeg", &path.display().to_string(), e))?;
        let stdin = child.stdin.take();
        let stderr = collect_stderr(&mut child);
        Ok(VideoWriter { path: path.into(), tmp, child, stdin, stderr, size: (width, height) })
    }

    pub fn write(&mut self, frame: &RgbImage) -> Result<()> {
        if frame.dimensions() != self.size {
            return Err(CoreError::Argument(format!(
                "{}: frame is {:?}, the video is {:?}",
                self.path.display(),
                frame.dimensions(),
                self.size
            )));
        }
        let stdin = self.stdin.as_mut().expect("open until finish");
        stdin.write_all(frame.as_raw()).map_err(|e| self.failure(&format!("writing a frame: {e}")))
    }

    /// Closes the pipe, waits for ffmpeg and moves the file into place.
    pub fn finish(mut self) -> Result<()> {
        drop(self.stdin.take());
        let status = self.child.wait().map_err(|e| CoreError::io(&self.path, e))?;
        if !status.success() {
            let _ = std::fs::remove_file(&self.tmp);
            return Err(self.failure(&format!("ffmpeg stopped ({status})")));
        }
        std::fs::rename(&self.tmp, &self.path).map_err(|e| CoreError::io(&self.path, e))
    }

    fn failure(&self, what: &str) -> CoreError {
        let tail = self.stderr.lock().map(|t| t.trim().to_string()).unwrap_or_default();
        CoreError::Argument(format!("{}: {what}: {}", self.path.display(), tail.lines().last().unwrap_or("no message")))
    }
}

/// Frames from a folder of images in name order (`fieldkit run --source DIR`), at `fps`
/// (`--fps`, default 10): media time `index / fps`, paced to it with `realtime`.
pub struct ImageSequence {
    paths: Vec<PathBuf>,
    info: VideoInfo,
    realtime: bool,
    opened: Instant,
    index: u64,
}

impl ImageSequence {
    pub const DEFAULT_FPS: f64 = 10.0;

    pub fn open(dir: &Path, opts: &ReadOptions) -> Result<ImageSequence> {
        let fps = opts.fps.unwrap_or(Self::DEFAULT_FPS);
        if !(fps > 0.0 && fps.is_finite()) {
            return Err(CoreError::Argument(format!("--fps {fps} must be > 0")));
        }
        let paths = crate::dataset::list_images(dir)?;
        let first = paths.first().ok_or_else(|| {
            CoreError::Argument(format!("{}: no images (.jpg, .png, ...) in this folder", dir.display()))
        })?;
        let (width, height) = crate::image_io::file_dimensions(first)?;
        Ok(ImageSequence {
            paths,
            info: VideoInfo { width, height, fps },
            realtime: opts.realtime,
            opened: Instant::now(),
            index: 0,
        })
    }

    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>> {
        let Some(path) = self.paths.get(self.index as usize) else { return Ok(None) };
        let time_s = self.index as f64 / self.info.fps;
        if self.realtime {
            let due = self.opened + std::time::Duration::from_secs_f64(time_s);
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
        let image = crate::image_io::read_rgb(path)?;
        let frame = VideoFrame { image, index: self.index, time_s, captured: Instant::now() };
        self.index += 1;
        Ok(Some(frame))
    }
}

/// A stream of frames: a video file, network stream or camera through ffmpeg, or a folder of
/// images.
pub enum FrameSource {
    Video(VideoReader),
    Images(ImageSequence),
}

impl FrameSource {
    /// A folder is read as images; anything else goes to ffmpeg.
    pub fn open(source: &str, opts: &ReadOptions) -> Result<FrameSource> {
        if Path::new(source).is_dir() {
            Ok(FrameSource::Images(ImageSequence::open(Path::new(source), opts)?))
        } else {
            Ok(FrameSource::Video(VideoReader::open(source, opts)?))
        }
    }

    pub fn info(&self) -> VideoInfo {
        match self {
            FrameSource::Video(v) => v.info(),
            FrameSource::Images(f) => f.info,
        }
    }

    pub fn next_frame(&mut self) -> Result<Option<VideoFrame>> {
        match self {
            FrameSource::Video(v) => v.next_frame(),
            FrameSource::Images(f) => f.next_frame(),
        }
    }
}

/// A video whose size is its first frame's: the writer starts on the first `write`. For
/// annotated outputs of streams, where the frame size is known only once frames arrive.
pub struct VideoOut {
    path: PathBuf,
    fps: f64,
    writer: Option<VideoWriter>,
}

impl VideoOut {
    pub fn new(path: &Path, fps: f64) -> Self {
        VideoOut { path: path.into(), fps, writer: None }
    }

    pub fn write(&mut self, frame: &RgbImage) -> Result<()> {
        let w = match &mut self.writer {
            Some(w) => w,
            None => self.writer.insert(VideoWriter::create(&self.path, frame.width(), frame.height(), self.fps)?),
        };
        w.write(frame)
    }

    /// Finishes the file and returns its path; `None` when no frame was written (no file).
    pub fn finish(self) -> Result<Option<PathBuf>> {
        match self.writer {
            Some(w) => w.finish().map(|_| Some(self.path)),
            None => Ok(None),
        }
    }
}

impl Drop for VideoWriter {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            // Dropped without finish(): stop ffmpeg and leave nothing behind.
            let _ = self.child.kill();
            let _ = self.child.wait();
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_and_live_sources() {
        assert_eq!(parse_rate("30000/1001").map(|r| (r * 100.0).round()), Some(2997.0));
        assert_eq!(parse_rate("25"), Some(25.0));
        assert_eq!(parse_rate("0/0"), None);
        assert!(is_live("rtsp://cam/1") && is_live("/dev/video0") && !is_live("field.mp4"));
    }

    /// Frames written through the writer come back through the reader with their pixels
    /// (within H.264's loss), their count and the frame rate; a missing file is named.
    #[test]
    fn round_trip_through_ffmpeg() {
        if !ffmpeg_available() {
            eprintln!("ffmpeg not on PATH: skipped (scripts/setup.sh installs it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("clip.mp4");
        let mut w = VideoWriter::create(&path, 64, 48, 10.0).unwrap();
        for k in 0..12u8 {
            w.write(&RgbImage::from_pixel(64, 48, image::Rgb([k * 20, 100, 200 - k * 10]))).unwrap();
        }
        w.finish().unwrap();
        assert!(path.exists() && std::fs::read_dir(dir.path()).unwrap().count() == 1, "no partial file left");
        let mut r = VideoReader::open(path.to_str().unwrap(), &ReadOptions::default()).unwrap();
        assert_eq!(r.info(), VideoInfo { width: 64, height: 48, fps: 10.0 });
        let mut n = 0;
        while let Some(f) = r.next_frame().unwrap() {
            assert_eq!(f.index, n);
            assert!((f.time_s - n as f64 / 10.0).abs() < 1e-9);
            let px = f.image.get_pixel(32, 24).0;
            assert!((px[0] as i32 - n as i32 * 20).abs() <= 6, "frame {n}: {px:?}");
            n += 1;
        }
        assert_eq!(n, 12);
        let err = VideoReader::open(dir.path().join("nope.mp4").to_str().unwrap(), &ReadOptions::default())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("nope.mp4") && err.contains("no video stream"), "{err}");
    }
}
