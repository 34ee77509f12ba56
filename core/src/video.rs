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
    /// The mode asked of a V4L2 camera; the driver's default where empty.
    pub camera: CameraMode,
    /// Reopening a live source already probed: its picture size and rate. No ffprobe run, a
    /// short stream analysis (0.2 s instead of ffmpeg's 5) and frames scaled to this size, so
    /// a camera back after a loss delivers within a second and in the same shape.
    pub known: Option<VideoInfo>,
}

/// The pixel format a V4L2 camera sends: compressed MJPEG (what USB cameras need for full
/// resolution at 30 fps over USB 2) or raw YUYV 4:2:2 (no decoding cost, lower rates).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraFormat {
    Mjpeg,
    Yuyv,
}

impl CameraFormat {
    /// ffmpeg's v4l2 `-input_format` name.
    fn ffmpeg_name(self) -> &'static str {
        match self {
            CameraFormat::Mjpeg => "mjpeg",
            CameraFormat::Yuyv => "yuyv422",
        }
    }
}

impl std::str::FromStr for CameraFormat {
    type Err = CoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "mjpeg" | "mjpg" => Ok(CameraFormat::Mjpeg),
            "yuyv" | "yuyv422" | "yuy2" => Ok(CameraFormat::Yuyv),
            _ => Err(CoreError::Argument(format!("--camera-format {s}: expected mjpeg or yuyv"))),
        }
    }
}

/// What to ask of a V4L2 camera (`/dev/videoN`): pixel format, frame size and rate. The
/// driver picks the nearest mode it has; `v4l2-ctl --list-formats-ext -d /dev/videoN` lists them.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CameraMode {
    pub format: Option<CameraFormat>,
    pub size: Option<(u32, u32)>,
    pub fps: Option<f64>,
}

impl CameraMode {
    pub fn is_empty(&self) -> bool {
        *self == CameraMode::default()
    }

    /// `"1280x720"` → (1280, 720).
    pub fn parse_size(s: &str) -> Result<(u32, u32)> {
        crate::wxh::parse_wxh(s).map_err(|e| CoreError::Argument(format!("--camera-size: {e}")))
    }

    /// ffmpeg's v4l2 demuxer options for this mode (before `-i`).
    fn ffmpeg_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(f) = self.format {
            args.extend(["-input_format".into(), f.ffmpeg_name().into()]);
        }
        if let Some((w, h)) = self.size {
            args.extend(["-video_size".into(), format!("{w}x{h}")]);
        }
        if let Some(f) = self.fps {
            args.extend(["-framerate".into(), format!("{f}")]);
        }
        args
    }
}

/// A V4L2 camera: `/dev/videoN` (or `/dev/v4l/by-id/...`, stable across reboots).
pub fn is_camera(source: &str) -> bool {
    source.starts_with("/dev/video") || source.starts_with("/dev/v4l/")
}

/// Checks what can be checked before ffmpeg runs: a camera mode only for a camera, a camera
/// that exists, a rate that is a rate.
pub fn check_source(source: &str, opts: &ReadOptions) -> Result<()> {
    if let Some(f) = opts.fps {
        if !(f > 0.0 && f.is_finite()) {
            return Err(CoreError::Argument(format!("--fps {f} must be > 0")));
        }
    }
    if let Some(f) = opts.camera.fps {
        if !(f > 0.0 && f.is_finite()) {
            return Err(CoreError::Argument(format!("--camera-fps {f} must be > 0")));
        }
    }
    if !opts.camera.is_empty() && !is_camera(source) {
        return Err(CoreError::Argument(format!(
            "--camera-format / --camera-size / --camera-fps set the mode of a V4L2 camera (/dev/videoN); {source} is not one"
        )));
    }
    if is_camera(source) && !Path::new(source).exists() {
        return Err(CoreError::Argument(format!(
            "{source}: no such camera (the cameras here: ls /dev/video*; v4l2-ctl --list-devices names them)"
        )));
    }
    Ok(())
}

/// Whether ffmpeg is on PATH (video input and output need it).
pub fn ffmpeg_available() -> bool {
    Command::new("ffmpeg").arg("-version").output().map(|o| o.status.success()).unwrap_or(false)
}

/// Live sources: a camera or a network stream (their time is the wall clock).
pub fn is_live(source: &str) -> bool {
    is_camera(source) || source.contains("://")
}

/// How long a network source may stay silent before ffmpeg gives up on it (microseconds).
const IO_TIMEOUT_US: &str = "5000000";

fn input_args(source: &str, camera: &CameraMode) -> Vec<String> {
    let mut args = Vec::new();
    if is_camera(source) {
        args.extend(["-f", "v4l2"].map(String::from));
        args.extend(camera.ffmpeg_args());
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

/// Picture size and frame rate of `source`'s first video stream (a camera in `camera`'s mode).
pub fn probe(source: &str, camera: &CameraMode) -> Result<VideoInfo> {
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
    let args = input_args(source, camera);
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
        check_source(source, opts)?;
        let mut info = match opts.known {
            Some(info) => info,
            None => probe(source, &opts.camera)?,
        };
        let mut cmd = Command::new("ffmpeg");
        cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
        if opts.realtime {
            cmd.arg("-re");
        }
        if opts.known.is_some() {
            // ffmpeg reads 5 s of a network stream before its first frame by default: 2-3 s
            // of blindness on every reconnection of an RTSP camera (measured), for a stream
            // whose shape is already known.
            cmd.args(["-analyzeduration", "200000"]);
        }
        cmd.args(input_args(source, &opts.camera));
        let mut filters = Vec::new();
        if let Some(f) = opts.fps {
            filters.push(format!("fps={f}"));
            info.fps = f;
        }
        if let Some(k) = opts.known {
            filters.push(format!("scale={}:{}", k.width, k.height));
        }
        if !filters.is_empty() {
            cmd.args(["-vf", &filters.join(",")]);
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
        check_source(&dir.to_string_lossy(), opts)?;
        let fps = opts.fps.unwrap_or(Self::DEFAULT_FPS);
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
    /// A folder is read as images; anything else goes to ffmpeg. Each checks its options
    /// ([`check_source`]) before it opens anything.
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
    /// For `write_at`: the last frame written and the source frame number after it.
    last: Option<RgbImage>,
    next_index: u64,
}

impl VideoOut {
    pub fn new(path: &Path, fps: f64) -> Self {
        VideoOut { path: path.into(), fps, writer: None, last: None, next_index: 0 }
    }

    /// Writes `frame` as source frame `index`: frames skipped since the last one (dropped by a
    /// loop slower than its camera) repeat the last frame written, so the video keeps the
    /// source's pace instead of playing fast. A frame at or before the last index is written
    /// once, in order.
    pub fn write_at(&mut self, frame: RgbImage, index: u64) -> Result<()> {
        if let Some(last) = self.last.take() {
            for _ in self.next_index..index {
                self.write(&last)?;
            }
        }
        self.write(&frame)?;
        self.next_index = index.max(self.next_index) + 1;
        self.last = Some(frame);
        Ok(())
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
        assert!(is_live("/dev/v4l/by-id/usb-cam-video-index0"));
    }

    /// A V4L2 camera's mode reaches ffmpeg's v4l2 demuxer as its own options, before `-i`;
    /// nothing is added for files and streams.
    #[test]
    fn camera_modes_become_v4l2_options() {
        let mode = CameraMode {
            format: Some("MJPG".parse().unwrap()),
            size: Some(CameraMode::parse_size("1280x720").unwrap()),
            fps: Some(30.0),
        };
        let args = input_args("/dev/video2", &mode);
        let want = "-f v4l2 -input_format mjpeg -video_size 1280x720 -framerate 30 -i /dev/video2";
        assert_eq!(args.join(" "), want);
        let yuyv = CameraMode { format: Some(CameraFormat::Yuyv), ..Default::default() };
        assert_eq!(input_args("/dev/video0", &yuyv).join(" "), "-f v4l2 -input_format yuyv422 -i /dev/video0");
        assert_eq!(input_args("/dev/video0", &CameraMode::default()).join(" "), "-f v4l2 -i /dev/video0");
        assert_eq!(input_args("field.mp4", &CameraMode::default()).join(" "), "-i field.mp4");
        assert!(input_args("rtsp://cam/1", &CameraMode::default()).contains(&"tcp".to_string()));
    }

    /// Bad camera settings are refused with the flag and value named, before ffmpeg runs.
    #[test]
    fn camera_settings_are_checked() {
        fn err<T>(r: Result<T>) -> String {
            r.err().map(|e| e.to_string()).unwrap_or_default()
        }
        assert!(err("h264".parse::<CameraFormat>()).contains("--camera-format h264: expected mjpeg or yuyv"));
        for bad in ["640", "640x", "x480", "0x480", "640x-1", "axb"] {
            assert!(
                err(CameraMode::parse_size(bad)).contains(&format!("--camera-size: '{bad}' is not WIDTHxHEIGHT")),
                "{bad}"
            );
        }
        let mode = |fps| ReadOptions { camera: CameraMode { fps, ..Default::default() }, ..Default::default() };
        let e = err(check_source("clip.mp4", &mode(Some(30.0))));
        assert!(e.contains("set the mode of a V4L2 camera") && e.contains("clip.mp4 is not one"), "{e}");
        assert!(err(check_source("/dev/video0", &mode(Some(0.0)))).contains("--camera-fps 0 must be > 0"));
        let e = err(check_source("/dev/video97", &ReadOptions::default()));
        assert!(e.contains("/dev/video97: no such camera"), "{e}");
        // Opening goes through the same check: no ffprobe run for a camera that is not there.
        let e = err(FrameSource::open("/dev/video97", &mode(Some(15.0))));
        assert!(e.contains("/dev/video97: no such camera"), "{e}");
        assert!(check_source("clip.mp4", &ReadOptions::default()).is_ok());
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

    /// Frames written at source numbers 0, 3, 4 (1 and 2 dropped) make a 5-frame video at the
    /// source's rate, frames 1 and 2 repeating frame 0.
    #[test]
    fn dropped_frames_keep_the_video_at_the_source_pace() {
        if !ffmpeg_available() {
            eprintln!("ffmpeg not on PATH: skipped (scripts/setup.sh installs it)");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("live.mp4");
        let mut out = VideoOut::new(&path, 10.0);
        for (index, red) in [(0, 0u8), (3, 120), (4, 240)] {
            out.write_at(RgbImage::from_pixel(64, 48, image::Rgb([red, 100, 100])), index).unwrap();
        }
        assert_eq!(out.finish().unwrap().as_deref(), Some(path.as_path()));
        let mut r = VideoReader::open(path.to_str().unwrap(), &ReadOptions::default()).unwrap();
        let mut reds = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            reds.push(f.image.get_pixel(32, 24).0[0] as i32);
        }
        let want = [0, 0, 0, 120, 240];
        assert_eq!(reds.len(), want.len(), "{reds:?}");
        for (got, want) in reds.iter().zip(want) {
            assert!((got - want).abs() <= 6, "{reds:?}");
        }
    }
}
