//! Matrix spec knowledge the proxy needs: the v1.11 endpoint table and its matcher, the
//! identifier grammar, and the federation `X-Matrix` Authorization header.

pub mod endpoints;
pub mod ids;
pub mod x_matrix;
