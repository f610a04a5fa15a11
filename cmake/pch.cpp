// Carries the precompiled torch header for every target (REUSE_FROM).
