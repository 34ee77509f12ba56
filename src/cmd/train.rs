//! `fieldkit train classify|detect|segment`: fine-tune MobileNetV2 on an ImageFolder, a
//! YOLOX-style detector on it over a YOLO data.yaml, or an LR-ASPP segmenter over a mask
//! folder, and export ONNX (+ card for classify and detect).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use fieldkit_core::dataset::masks::MaskDataset;
use fieldkit_core::fsio;
use fieldkit_trainer::data::boxes::DetAugment;
use fieldkit_trainer::data::{Augment, AugmentPreset, MixKind, MixSettings};
use fieldkit_trainer::train::detect::{BoxLoss, DetectConfig};
use fieldkit_trainer::train::segment::{SegDecoder, SegLoss, SegmentConfig};
use fieldkit_trainer::train::{
    self, ClassWeights, ClassifyConfig, LoopSettings, Monitor, OptimizerKind, Precision, Progress, ScheduleKind,
    Strategy, Tta,
};
use fieldkit_trainer::{DeviceKind, DeviceSpec};

/// `--corrupt` for tiles when not given (see where it is applied).
const TILE_CORRUPT: f32 = 0.5;

/// Each flag given (`Some`) over the setting of the same name: `set_given!(args => config; f, ...)`.
macro_rules! set_given {
    ($args:expr => $cfg:expr; $($f:ident),*) => { $( if let Some(v) = $args.$f.clone() { $cfg.$f = v; } )* };
}

#[derive(Subcommand)]
pub enum TrainCommand {
    /// Fine-tune an image classifier (MobileNetV2) on an ImageFolder dataset.
    Classify(Box<ClassifyArgs>),
    /// Train a YOLOX-style detector (MobileNetV2 backbone, PAN neck, decoupled head) on a YOLO data.yaml.
    Detect(Box<DetectArgs>),
    /// Train a segmenter (LR-ASPP head on MobileNetV2) on a mask folder (classes.csv and
    /// <split>/images + <split>/masks), a YOLO-seg data.yaml or COCO polygons / RLE.
    Segment(Box<SegmentArgs>),
    /// List the training backends (`--device`) this build has, and what each would run on
    /// here: the GPU adapter's name, or why it cannot run; under a GPU backend, its devices as
    /// `--devices` names them.
    Devices,
}

#[derive(Args)]
pub struct SegmentArgs {
    /// Segmentation data: a mask folder (classes.csv; train/ and valid/ each with images/ and
    /// masks/), a YOLO-seg data.yaml (polygon labels), or a COCO folder
    /// (<split>/_annotations.coco.json, or annotations/instances_<split>.json with <split>/).
    #[arg(long)]
    data: PathBuf,
    /// Output directory (model.onnx, valid_metrics.json, metrics.csv, checkpoints/).
    #[arg(long)]
    out: PathBuf,
    /// Pretrained backbone (torchvision-named safetensors, e.g. the ImageNet MobileNetV2).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    train_split: String,
    /// Validation split (default: valid/, val/ or test/, the first that exists).
    #[arg(long)]
    valid_split: Option<String>,
    /// Continue the run in --out from its last checkpoint (its config.json is used).
    #[arg(long)]
    resume: bool,
    /// Network input WIDTHxHEIGHT, both multiples of 32 (default 384x288); images are stretched to it.
    #[arg(long, value_parser = parse_size)]
    size: Option<[u32; 2]>,
    /// Channels of LR-ASPP's deep branch (default 128).
    #[arg(long)]
    inter: Option<usize>,
    /// lraspp-s4 (default: LR-ASPP plus a DeepLabV3+-style stride-4 decoder, for thin weeds)
    /// or lraspp (torchvision's LR-ASPP alone, logits at stride 8; ~15 % faster an epoch).
    #[arg(long, value_enum)]
    decoder: Option<SegDecoder>,
    /// Backbone layers before torchvision features.N stay frozen (default 0: all train).
    #[arg(long)]
    unfreeze_from: Option<usize>,
    /// ce (class-weighted cross-entropy), dice, or ce-dice (default).
    #[arg(long, value_enum)]
    loss: Option<SegLoss>,
    /// Cross-entropy class weights from the train pixels (default sqrt).
    #[arg(long, value_enum)]
    class_weights: Option<ClassWeights>,
    /// Augmentation preset over the image and its mask together (default: topdown with crops
    /// down to 35 % of the area).
    #[arg(long, value_enum)]
    augment: Option<AugmentPreset>,
    #[command(flatten)]
    train: TrainLoopArgs,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// `WIDTHxHEIGHT`.
fn parse_size(s: &str) -> Result<[u32; 2], String> {
    fieldkit_core::wxh::parse_wxh(s).map(|(w, h)| [w, h])
}

#[derive(Args)]
pub struct DetectArgs {
    /// Ultralytics data.yaml (train/val image folders or lists, names).
    #[arg(long)]
    data: PathBuf,
    /// Output directory (model.onnx, model.json, metrics.csv, report.md, checkpoints/).
    #[arg(long)]
    out: PathBuf,
    /// Pretrained backbone (torchvision-named safetensors, e.g. the ImageNet MobileNetV2).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    train_split: String,
    #[arg(long, default_value = "val")]
    valid_split: String,
    /// Continue the run in --out from its last checkpoint (its config.json is used).
    #[arg(long)]
    resume: bool,
    /// Square input size (multiple of 32): 320 (default, CPU), 416, 640.
    #[arg(long)]
    size: Option<u32>,
    /// Backbone layers before torchvision features.N stay frozen (0 = all train; default 14).
    #[arg(long)]
    unfreeze_from: Option<usize>,
    #[arg(long)]
    width: Option<f64>,
    /// Channels of the neck and head (default 64).
    #[arg(long)]
    neck_width: Option<usize>,
    /// Depthwise-separable convs per head branch (default 2).
    #[arg(long)]
    head_depth: Option<usize>,
    /// The last N epochs train without mosaic and with the L1 box loss (default 2).
    #[arg(long)]
    close_mosaic: Option<usize>,
    /// Mosaic probability over the preset's (0 disables).
    #[arg(long)]
    mosaic: Option<f32>,
    #[arg(long, value_enum)]
    box_loss: Option<BoxLoss>,
    /// Augmentation preset (standard: YOLOX-nano's; topdown adds vertical flips).
    #[arg(long, value_enum)]
    augment: Option<AugmentPreset>,
    #[command(flatten)]
    train: TrainLoopArgs,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Args)]
pub struct ClassifyArgs {
    /// ImageFolder root with train/ and valid/ (or val/) class folders.
    #[arg(long)]
    data: PathBuf,
    /// Output directory (model.onnx, model.json, metrics.csv, report.md, checkpoints/).
    #[arg(long)]
    out: PathBuf,
    /// Pretrained backbone (torchvision-named safetensors, e.g. the ImageNet MobileNetV2).
    #[arg(long)]
    weights: Option<PathBuf>,
    #[arg(long, default_value = "train")]
    train_split: String,
    /// Validation split (default: the first of valid, val, test present).
    #[arg(long)]
    valid_split: Option<String>,
    /// Continue the run in --out from its last checkpoint (its config.json is used).
    #[arg(long)]
    resume: bool,
    /// Run an LR range test instead of training; prints the suggested --lr, writes lr_find.png.
    #[arg(long)]
    lr_find: bool,
    #[arg(long, value_enum)]
    strategy: Option<Strategy>,
    /// First trainable layer, torchvision features.N (0..=19) for partial; the floor for gradual.
    #[arg(long)]
    unfreeze_from: Option<usize>,
    /// Gradual: epochs per unfrozen stage.
    #[arg(long)]
    gradual_epochs: Option<usize>,
    /// Square input size in pixels (multiple of 32); default from the training images: 96 for
    /// small tiles (median short side <= 80 px), 160 for photos >= 256 px, else 128.
    #[arg(long)]
    size: Option<u32>,
    #[arg(long)]
    width: Option<f64>,
    #[arg(long)]
    dropout: Option<f64>,
    /// Spread the backbone lr geometrically from lr/lr-mult (stem) to lr (last layer).
    #[arg(long)]
    lr_ramp: bool,
    #[arg(long, value_enum)]
    monitor: Option<Monitor>,
    /// Loss weights per class: none, auto (sklearn balanced) or sqrt.
    #[arg(long, value_enum)]
    class_weights: Option<ClassWeights>,
    #[arg(long)]
    label_smoothing: Option<f32>,
    /// Augmentation preset (default: topdown for tiles with a median short side <= 80 px,
    /// standard for photos).
    #[arg(long, value_enum)]
    augment: Option<AugmentPreset>,
    /// Random-resized-crop area range over the preset's, as MIN or MIN,MAX (fractions of the image).
    #[arg(long, value_delimiter = ',', num_args = 1..=2)]
    crop_scale: Option<Vec<f32>>,
    /// Probability of one field corruption per training view (sensor noise, JPEG, blur, up to
    /// the severities `eval --perturb` scores, on the stored photo); default 0.5 for tiles
    /// (when --augment topdown is picked for them), 0 for photos.
    #[arg(long)]
    corrupt: Option<f32>,
    /// Test-time views the exported model averages: default the symmetries the augmentation
    /// trained (d4 for tiles with --augment topdown, flip with standard or light, none with
    /// --augment none); each view costs one more forward pass.
    #[arg(long, value_enum)]
    tta: Option<Tta>,
    /// Batch mixing: mixup (pixel blend) or cutmix (pasted rectangle) between the images of a
    /// batch, scored against both labels by the mixing weight; default off.
    #[arg(long, value_enum)]
    mix: Option<MixKind>,
    /// Beta(α, α) of the mixing weight (default: mixup 0.4, cutmix 1.0).
    #[arg(long, requires = "mix")]
    mix_alpha: Option<f32>,
    /// Probability that a batch is mixed (default 1).
    #[arg(long, requires = "mix")]
    mix_prob: Option<f32>,
    #[command(flatten)]
    train: TrainLoopArgs,
    /// No progress output.
    #[arg(long, short)]
    quiet: bool,
}

/// The loop flags both tasks take, defined once (defaults differ per task: see each config).
#[derive(Args)]
pub struct TrainLoopArgs {
    /// Epochs (default: classify 12, detect 14).
    #[arg(long)]
    epochs: Option<usize>,
    #[arg(long)]
    batch: Option<usize>,
    #[arg(long, value_enum)]
    optimizer: Option<OptimizerKind>,
    /// Head learning rate (peak of the schedule; the neck's too for a detector).
    #[arg(long)]
    lr: Option<f64>,
    /// Backbone lr = lr / lr-mult (discriminative learning rates; 1 disables).
    #[arg(long)]
    lr_mult: Option<f64>,
    #[arg(long)]
    momentum: Option<f64>,
    #[arg(long)]
    weight_decay: Option<f64>,
    /// Clip each gradient tensor to this L2 norm; 0 disables (default: detect 10, classify none).
    #[arg(long)]
    clip_grad: Option<f32>,
    #[arg(long, value_enum)]
    schedule: Option<ScheduleKind>,
    #[arg(long)]
    warmup_epochs: Option<f64>,
    /// Step schedule: epochs between decays, and the decay factor.
    #[arg(long)]
    step_epochs: Option<usize>,
    #[arg(long)]
    gamma: Option<f64>,
    /// Early stopping: epochs without improvement (classify: of --monitor; detect: of valid mAP50-95).
    #[arg(long)]
    patience: Option<usize>,
    #[arg(long)]
    seed: Option<u64>,
    /// Data-loading threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    #[arg(long, value_enum)]
    device: Option<DeviceKind>,
    /// Data-parallel training: split each batch over these devices of one backend, e.g.
    /// `cuda:0,cuda:1` (`fieldkit train devices` lists them; a backend's name alone is its
    /// default device). Gradients are summed on the first, which holds the model; --batch is
    /// the total over all of them.
    #[arg(long, value_delimiter = ',', conflicts_with = "device")]
    devices: Option<Vec<DeviceSpec>>,
    /// What a step computes in: f32, or f16 / bf16 with f32 master weights (GPU backends only;
    /// f16 with dynamic loss scaling).
    #[arg(long, value_enum)]
    precision: Option<Precision>,
    #[arg(long)]
    checkpoint_minutes: Option<f64>,
    /// Hold this fraction of the train split out, by whole photos (copies of one photo stay
    /// together), and score the exported model on it beside valid (default 0: none).
    #[arg(long)]
    holdout: Option<f64>,
    /// Validate, keep and export a moving average of the weights spanning about this many
    /// epochs (YOLOX, Ultralytics, timm); 0 turns it off. Default: detect 1, classify 0.
    #[arg(long)]
    ema: Option<f64>,
}

impl TrainLoopArgs {
    /// The flags given, over a task's defaults. `--clip-grad 0` (or below) is no clipping.
    pub fn apply(&self, s: &mut LoopSettings) {
        set_given!(self => s; epochs, batch, optimizer, lr, lr_mult, momentum, weight_decay, schedule, warmup_epochs);
        set_given!(self => s; step_epochs, gamma, seed, workers, device, precision, checkpoint_minutes, holdout, ema);
        if self.clip_grad.is_some() {
            s.clip_grad = train::settings::clip_limit(self.clip_grad);
        }
        if self.patience.is_some() {
            s.patience = self.patience;
        }
        if let Some(devices) = &self.devices {
            s.devices = devices.clone();
            s.device = devices.first().map_or(s.device, |d| d.kind);
        }
    }
}

pub fn run(cmd: TrainCommand) -> Result<i32> {
    match cmd {
        TrainCommand::Classify(a) => classify(*a),
        TrainCommand::Detect(a) => detect(*a),
        TrainCommand::Segment(a) => segment(*a),
        TrainCommand::Devices => devices(),
    }
}

/// burn's GPU backends report a failed allocation or kernel by panicking where the host reads a
/// tensor back (`into_data`): on a GPU device that panic becomes an error with advice (exit 2).
/// Checkpoints are written atomically, so the run resumes from the last one.
fn on_device<T, E>(device: DeviceKind, run: impl FnOnce() -> std::result::Result<T, E>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    if !device.is_gpu() {
        return Ok(run()?);
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(run)) {
        Ok(r) => Ok(r?),
        Err(panic) => {
            let msg = fieldkit_trainer::device::panic_message(panic.as_ref()).unwrap_or_default();
            bail!(
                "--device {}: the GPU failed while training: {}. If it ran out of memory, lower --batch or --size; \
                 the checkpoints written so far are intact (--resume continues)",
                device.name(),
                root_cause(&msg)
            )
        }
    }
}

/// The innermost cause of a burn / CubeCL error chain: the line after its last "Caused by:",
/// or its first line.
fn root_cause(msg: &str) -> &str {
    let lines: Vec<&str> = msg.lines().map(str::trim).collect();
    let cause = lines.iter().rposition(|l| *l == "Caused by:").and_then(|i| lines.get(i + 1)).copied();
    cause.filter(|l| !l.is_empty()).or(lines.first().copied()).unwrap_or("no message")
}

fn devices() -> Result<i32> {
    use clap::ValueEnum;
    for kind in DeviceKind::value_variants() {
        match kind.device() {
            Ok(device) => {
                println!("{}", kind.describe(&device));
                // What `--devices` can name: the backend's enumerated devices.
                if kind.is_gpu() {
                    for (i, d) in kind.enumerate().unwrap_or_default().iter().enumerate() {
                        println!("  {}", DeviceSpec { kind: *kind, index: Some(i) }.describe(d));
                    }
                }
            }
            Err(e) => println!("{}: unavailable ({e})", kind.name()),
        }
    }
    Ok(0)
}

fn default_valid_split(data: &Path) -> Result<String> {
    match ["valid", "val", "test"].iter().find(|s| data.join(s).is_dir()) {
        Some(s) => Ok(s.to_string()),
        None => bail!("{}: no valid/, val/ or test/ folder for validation (pass --valid-split)", data.display()),
    }
}

/// Flags over the defaults; every setting ends up in config.json.
pub fn config_from_args(a: &ClassifyArgs) -> Result<ClassifyConfig> {
    if !a.data.is_dir() {
        let what = if a.data.exists() { "not a folder" } else { "no such folder" };
        bail!(
            "{}: {what} (--data takes an ImageFolder root: train/ and valid/ folders of class folders)",
            a.data.display()
        );
    }
    let mut c = ClassifyConfig::new(a.data.clone());
    c.train_split = a.train_split.clone();
    c.valid_split = match &a.valid_split {
        Some(s) => s.clone(),
        None => default_valid_split(&a.data)?,
    };
    c.weights = a.weights.clone();
    let mut tiles = false;
    if a.size.is_none() || a.augment.is_none() {
        let folder = fieldkit_core::dataset::ImageFolder::open(&c.data, &c.train_split)?;
        let (size, median) = fieldkit_trainer::data::auto_size(&folder)?;
        if a.size.is_none() {
            eprintln!("note: --size {size} from the training images (median short side {median} px)");
            c.size = size;
        }
        if a.augment.is_none() {
            let preset = fieldkit_trainer::data::auto_augment(median);
            c.augment = Augment::preset(preset);
            if preset == AugmentPreset::Topdown {
                tiles = true;
                eprintln!("note: --augment topdown (adds vertical flips and quarter turns) for tiles of {median} px; pass --augment standard if up matters in them");
            }
        }
    }
    set_given!(a => c; strategy, unfreeze_from, gradual_epochs, size, width, dropout, monitor, class_weights, label_smoothing);
    a.train.apply(&mut c.train);
    if a.lr_ramp {
        c.lr_ramp = true;
    }
    if let Some(preset) = a.augment {
        c.augment = Augment::preset(preset);
    }
    if let Some(v) = &a.crop_scale {
        c.augment.crop_scale = [v[0], v.get(1).copied().unwrap_or(1.0)];
    }
    if let Some(p) = a.corrupt {
        c.augment.corrupt = p;
    } else if tiles && c.strategy != Strategy::Head {
        // Field tiles come noisy and heavily compressed. On weed-cls9 (held-out photos, one
        // seed) this halved the noise drop and cut the JPEG-15 drop by 38 % with valid top-1
        // unchanged and held-out +1.6 pp (README "Training"). Cached features (--strategy head)
        // see no augmentation, so there it stays off.
        c.augment.corrupt = TILE_CORRUPT;
        eprintln!("note: --corrupt {TILE_CORRUPT} (sensor noise, JPEG or blur on half the views) for tiles; --corrupt 0 turns it off");
    }
    if let Some(kind) = a.mix {
        c.augment.mix = Some(MixSettings::new(kind, a.mix_alpha, a.mix_prob));
    }
    c.tta = match a.tta {
        Some(t) => t,
        None => {
            // Averaging the views training taught the network to treat alike lifted
            // held-out top-1 on weed-cls9 (d4) and cattle-breed5 (flip); README "Training".
            let t = Tta::matching(&c.augment);
            if t != Tta::None {
                eprintln!(
                    "note: --tta {}: the exported model averages {} views ({}x one view's compute); --tta none for one",
                    t.name(),
                    t.views().len(),
                    t.views().len()
                );
            }
            t
        }
    };
    if c.strategy == Strategy::Partial && a.unfreeze_from.is_none() && a.strategy.is_some() {
        // An explicit --strategy partial keeps the default boundary; say which.
        eprintln!("note: --strategy partial trains features.{}.. (set --unfreeze-from)", c.unfreeze_from);
    }
    if c.strategy == Strategy::Gradual && a.unfreeze_from.is_none() {
        c.unfreeze_from = 0;
    }
    Ok(c)
}

fn classify(a: ClassifyArgs) -> Result<i32> {
    let progress = Progress { quiet: a.quiet };
    let cfg = if a.resume {
        let p = a.out.join("config.json");
        let c: ClassifyConfig =
            fsio::read_json(&p).with_context(|| format!("--resume needs the run's {}", p.display()))?;
        c
    } else {
        config_from_args(&a)?
    };
    if a.lr_find {
        let r = train::lr_find(&cfg, &a.out, &progress)?;
        println!(
            "suggested lr {:.2e} (valley); steepest {:.2e}, min/10 {:.2e}; plot {}",
            r.suggestion,
            r.steepest,
            r.min_div10,
            a.out.join("lr_find.png").display()
        );
        return Ok(0);
    }
    let s = on_device(cfg.device, || fieldkit_trainer::train_classify(&cfg, &a.out, a.resume, &progress))?;
    println!(
        "model {}  valid top1 {:.4}  macro_f1 {:.4}  (best epoch {:?}, {:.1} min)",
        s.model.display(),
        s.top1,
        s.macro_f1,
        s.best_epoch,
        s.train_seconds / 60.0
    );
    if let Some(o) = &s.one_view {
        println!(
            "  with test-time views {}; the network on one view: top1 {:.4}  macro_f1 {:.4}",
            cfg.tta.describe(),
            o.top1,
            o.macro_f1
        );
    }
    if let Some(h) = &s.holdout {
        println!(
            "held out of train ({} images, whole photos): top1 {:.4}  macro_f1 {:.4}",
            h.num_samples, h.top1, h.macro_f1
        );
    }
    println!("report {}", s.out.join("report.md").display());
    Ok(0)
}

/// Detection flags over the defaults.
pub fn detect_config_from_args(a: &DetectArgs) -> Result<DetectConfig> {
    let mut c = DetectConfig::new(a.data.clone());
    c.train_split = a.train_split.clone();
    c.valid_split = a.valid_split.clone();
    c.weights = a.weights.clone();
    if c.weights.is_none() && a.unfreeze_from.is_none() {
        // From scratch nothing can stay frozen.
        c.unfreeze_from = 0;
    }
    set_given!(a => c; size, unfreeze_from, width, neck_width, head_depth, close_mosaic, box_loss);
    a.train.apply(&mut c.train);
    if let Some(preset) = a.augment {
        c.augment = DetAugment::preset(preset);
    }
    if let Some(m) = a.mosaic {
        c.augment.mosaic = m;
    }
    Ok(c)
}

fn detect(a: DetectArgs) -> Result<i32> {
    let progress = Progress { quiet: a.quiet };
    let cfg = if a.resume {
        let p = a.out.join("config.json");
        let c: DetectConfig =
            fsio::read_json(&p).with_context(|| format!("--resume needs the run's {}", p.display()))?;
        c
    } else {
        detect_config_from_args(&a)?
    };
    let s = on_device(cfg.device, || train::detect::train_detect(&cfg, &a.out, a.resume, &progress))?;
    println!(
        "model {}  valid mAP50 {:.4}  mAP50-95 {:.4}  count MAE {:.3}  (best epoch {:?}, {:.1} min)",
        s.model.display(),
        s.map50,
        s.map50_95,
        s.count_mae,
        s.best_epoch,
        s.train_seconds / 60.0
    );
    if let Some((h, images)) = &s.holdout {
        println!("held out of train ({images} images, whole photos): mAP50 {:.4}  mAP50-95 {:.4}", h.map50, h.map50_95);
    }
    println!("report {}", s.out.join("report.md").display());
    Ok(0)
}

/// Segmentation flags over the defaults.
pub fn segment_config_from_args(a: &SegmentArgs) -> Result<SegmentConfig> {
    // Opening names what is wrong with the layout; the splits come from what it holds.
    let data = MaskDataset::open(&a.data)?;
    let mut c = SegmentConfig::new(a.data.clone());
    c.train_split = a.train_split.clone();
    c.valid_split = match &a.valid_split {
        Some(s) => s.clone(),
        None => ["valid", "test"].iter().find_map(|s| data.resolve_split(s)).ok_or_else(|| {
            anyhow::anyhow!("{}: no valid/val or test split for validation (pass --valid-split)", a.data.display())
        })?,
    };
    c.weights = a.weights.clone();
    set_given!(a => c; size, inter, decoder, unfreeze_from, loss, class_weights);
    a.train.apply(&mut c.train);
    if let Some(preset) = a.augment {
        c.augment = Augment::preset(preset);
    }
    Ok(c)
}

fn segment(a: SegmentArgs) -> Result<i32> {
    let progress = Progress { quiet: a.quiet };
    let cfg = if a.resume {
        let p = a.out.join("config.json");
        let c: SegmentConfig =
            fsio::read_json(&p).with_context(|| format!("--resume needs the run's {}", p.display()))?;
        c
    } else {
        segment_config_from_args(&a)?
    };
    let s = on_device(cfg.device, || train::segment::train_segment(&cfg, &a.out, a.resume, &progress))?;
    let per: Vec<String> = s
        .valid
        .per_class
        .iter()
        .map(|c| format!("{} {}", c.name, c.iou.map_or("-".into(), |v| format!("{v:.4}"))))
        .collect();
    println!(
        "model {}  valid mIoU {:.4} ({})  pixel acc {:.4}  (best epoch {:?}, {:.1} min)",
        s.model.display(),
        s.valid.miou,
        per.join(", "),
        s.valid.pixel_acc,
        s.best_epoch,
        s.train_seconds / 60.0
    );
    if let Some(h) = &s.holdout {
        println!("held out of train (whole photos): mIoU {:.4}  pixel acc {:.4}", h.miou, h.pixel_acc);
    }
    println!("metrics {}", s.out.join("valid_metrics.json").display());
    Ok(0)
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use fieldkit_trainer::train::detect::DetectConfig;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        train: TrainLoopArgs,
    }

    /// One mapping for both tasks: `--clip-grad 0` is no clipping (classification once turned
    /// it into a zero norm that erased every gradient), a positive value clips at it.
    #[test]
    fn loop_flags_map_the_same_for_both_tasks() {
        let off = Cli::try_parse_from(["fieldkit", "--clip-grad", "0", "--epochs", "3", "--patience", "2"]).unwrap();
        let mut c = ClassifyConfig::new("data".into());
        c.clip_grad = Some(5.0);
        off.train.apply(&mut c.train);
        assert_eq!((c.clip_grad, c.epochs, c.patience), (None, 3, Some(2)));
        let mut d = DetectConfig::new("data.yaml".into());
        assert_eq!(d.clip_grad, Some(10.0));
        off.train.apply(&mut d.train);
        assert_eq!((d.clip_grad, d.epochs, d.patience), (None, 3, Some(2)));
        let on = Cli::try_parse_from(["fieldkit", "--clip-grad", "2.5"]).unwrap();
        on.train.apply(&mut c.train);
        assert_eq!((c.clip_grad, c.epochs), (Some(2.5), 3));
    }

    /// `--augment` is one list of presets for every task, checked when the flags are parsed:
    /// an unknown name is refused with the names it could be.
    #[test]
    fn augment_presets_parse_for_every_task() {
        #[derive(Parser)]
        struct Both {
            #[command(subcommand)]
            task: TrainCommand,
        }
        let parse = |task: &str, preset: &str| {
            let data = if task == "detect" { "data.yaml" } else { "data" };
            Both::try_parse_from(["fieldkit", task, "--data", data, "--out", "out", "--augment", preset])
        };
        for task in ["classify", "detect", "segment"] {
            let ok = parse(task, "topdown").map_err(|e| e.to_string()).unwrap();
            let preset = match ok.task {
                TrainCommand::Classify(a) => a.augment,
                TrainCommand::Detect(a) => a.augment,
                TrainCommand::Segment(a) => a.augment,
                TrainCommand::Devices => unreachable!("parsed a training task"),
            };
            assert_eq!(preset, Some(AugmentPreset::Topdown), "{task}");
            let err = parse(task, "mosaic").err().expect("mosaic is not a preset").to_string();
            assert!(err.contains("mosaic") && err.contains("standard"), "{task}: {err}");
        }
    }

    /// The allocation failure lavapipe gives the default detector (320 px, batch 16): the
    /// message names the allocation, not the kernel that found its memory missing.
    #[test]
    fn a_gpu_failure_is_reported_by_its_root_cause() {
        let msg = "Error while reading data: use `try_into_data` instead\nCaused by:\n  Several failures at once\n\
                   Caused by:\n  The bytes were never written (failure #595)\n  skipped `CopyKernel`\n\
                   Caused by:\n  An IO error happened\nCaused by:\n  can't allocate buffer of size: 157286400\n\
                   No backtrace available";
        assert_eq!(root_cause(msg), "can't allocate buffer of size: 157286400");
        assert_eq!(root_cause("device lost\nmore"), "device lost");
        assert_eq!(root_cause(""), "no message");
    }

    #[test]
    fn segment_size_is_width_by_height() {
        assert_eq!(parse_size("384x288"), Ok([384, 288]));
        assert!(parse_size("384").unwrap_err().contains("WIDTHxHEIGHT"));
        assert!(parse_size("ax2").is_err());
    }
}
