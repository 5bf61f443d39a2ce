//! Progress bars. Every bar the CLI draws is made here, so that `kiln compare`, which draws
//! one bar per (target, config) pair, can keep the bars of the work it runs inside those pairs
//! (calibration, bias correction, evaluation) off the screen.

use std::sync::atomic::{AtomicBool, Ordering};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

static NESTED_HIDDEN: AtomicBool = AtomicBool::new(false);

/// From now on, bars made by [`bar`] are not drawn (the caller draws its own).
pub fn hide_nested() {
    NESTED_HIDDEN.store(true, Ordering::Relaxed);
}

/// A bar of `len` steps drawn with `template` (an indicatif template) on stderr, or hidden
/// after [`hide_nested`].
pub fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = if NESTED_HIDDEN.load(Ordering::Relaxed) {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::hidden())
    } else {
        ProgressBar::new(len)
    };
    bar.set_style(
        ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}
