//! Warnings about what Spryker silently gets wrong (filled in by the loader work).
