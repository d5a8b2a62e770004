//! What a run leaves besides its report: the HTML page of a run ([`html`]) and the lanes'
//! time series it draws ([`series`]).

pub mod html;
pub mod series;
