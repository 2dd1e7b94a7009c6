//! Integration tests of the projection runner.
