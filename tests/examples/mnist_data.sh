# Sourced by the mnist_mlp end-to-end scripts: with `data` set to the IDX directory (or
# empty for Debian's dataset-fashion-mnist), exits 77 (CTest: skipped) when the data is
# missing, and makes a temporary directory `dir`, removed on exit.
data=${data:-/usr/share/datasets/fashion-mnist}
if [ ! -e "$data/train-images-idx3-ubyte.gz" ] && [ ! -e "$data/train-images-idx3-ubyte" ]; then
  echo "SKIPPED: no MNIST-format data in $data (Debian package dataset-fashion-mnist)"
  exit 77
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
