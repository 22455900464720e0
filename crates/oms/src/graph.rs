//! DOT and SVG rendering (filled in by the graph work).
