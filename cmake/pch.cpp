// Anchor for the precompiled header target (cmake/pch.h); it defines nothing.
