//! Spryker `<statemachine>` XML loader (filled in by the parser work).
