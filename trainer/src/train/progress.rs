//! Progress for humans: a bar with ETA and live loss on a terminal (indicatif), plain
//! epoch lines always, nothing at all when quiet.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub quiet: bool,
}

pub struct Bar {
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn message(&self, msg: &str) {
        if !self.quiet {
            eprintln!("{msg}");
        }
    }

    /// A bar over `total` steps (0 when unknown yet); hidden when stderr is not a terminal.
    pub fn bar(&self, name: &str, total: usize) -> Bar {
        if self.quiet {
            return Bar { bar: None };
        }
        let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta_precise} {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(name.to_string());
        Bar { bar: Some(bar) }
    }
}

impl Bar {
    pub fn set(&self, pos: usize, msg: &str) {
        if let Some(b) = &self.bar {
            b.set_position(pos as u64);
            b.set_message(msg.to_string());
        }
    }

    pub fn update(&self, pos: usize, total: usize) {
        if let Some(b) = &self.bar {
            b.set_length(total as u64);
            b.set_position(pos as u64);
        }
    }

    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
