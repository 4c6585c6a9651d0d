"""The `sources` filegroup each library package exports for tools/."""

def sources_filegroup():
    """Every .cc, .h and .S file of the package, for the thread-safety check."""
    native.filegroup(
        name = "sources",
        srcs = native.glob(["**/*.cc", "**/*.h", "**/*.S"]),
        visibility = ["//tools:__pkg__"],
    )
