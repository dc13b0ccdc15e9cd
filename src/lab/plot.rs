//! SVG plot (pending merge)
use super::timeline::Timeline;
#[derive(Default)]
pub struct PlotOpts;
pub fn svg(_t: &Timeline, _o: &PlotOpts) -> String { String::new() }
