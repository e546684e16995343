"""absl command-line runners. Only these modules define and read flags."""
