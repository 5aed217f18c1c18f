#!/usr/bin/env bash
# Turns a metrics CSV written by mnist_mlp --metrics into a PNG (gnuplot):
# train loss and test accuracy per epoch.  Usage: plot_metrics.sh metrics.csv out.png
set -euo pipefail
csv=${1:?usage: plot_metrics.sh metrics.csv out.png}
png=${2:-${csv%.csv}.png}
command -v gnuplot >/dev/null || { echo "plot_metrics: gnuplot not found (apt-get install gnuplot-nox)" >&2; exit 1; }
gnuplot <<GP
set datafile separator ','
set terminal pngcairo size 900,400 noenhanced
set output '$png'
set multiplot layout 1,2
set xlabel 'epoch'; set grid
set title 'train loss'; plot '$csv' using 1:2 skip 1 with linespoints notitle
set title 'test accuracy'; plot '$csv' using 1:(100*\$3) skip 1 with linespoints notitle
unset multiplot
GP
echo "plot_metrics: wrote $png"
