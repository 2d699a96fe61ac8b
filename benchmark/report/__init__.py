"""From records to results, one way: `aggregate` (records -> per cell and seed), `tables` (the
paper's layouts), `render` (Markdown / LaTeX / CSV files), `plots` (figures), `markdown` (the
report of a grid). Records come from benchmark.store; a grid's layout and reference rows come
from its experiments.Grid."""
