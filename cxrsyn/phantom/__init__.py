"""The attribute grid (sex, age band, habitus, projection x class) and the phantom chest-film simulator that
draws from it: below both the data sources and the generators, since the phantom is each of them."""
