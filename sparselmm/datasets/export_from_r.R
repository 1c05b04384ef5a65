#!/usr/bin/env Rscript
## Export lme4's example datasets for sparselmm.
##
## Usage (from the repository root):
##   Rscript sparselmm/datasets/export_from_r.R
##
## For each dataset NAME this writes
##   sparselmm/datasets/data/NAME.csv.gz  gzip CSV, R column names, no row names
##   sparselmm/datasets/data/NAME.json    metadata (source, column kinds, levels)
## Numbers are written with the shortest representation that round-trips
## exactly (15 significant digits if enough, otherwise 17).

suppressPackageStartupMessages(library(lme4))
library(jsonlite)

out_dir <- file.path("sparselmm", "datasets", "data")
dir.create(out_dir, showWarnings = FALSE, recursive = TRUE)

descriptions <- c(
  sleepstudy = "Average reaction time per day (ms) for subjects in a sleep deprivation study",
  Dyestuff   = "Yield of dyestuff (grams of standard colour) for 5 preparations from each of 6 batches",
  Dyestuff2  = "Simulated yield data for 6 batches (Box and Tiao) with a singular random-effects fit",
  Penicillin = "Diameter of growth-inhibition zone for 6 penicillin samples on 24 plates",
  Pastes     = "Strength of paste from 2 assays of 3 casks in each of 10 delivery batches",
  InstEval   = "University lecture evaluations by students (ETH Zurich), ratings 1-5",
  cake       = "Breakage angle of chocolate cakes by recipe, baking temperature and replicate"
)

fmt_num <- function(x) {
  out <- sprintf("%.15g", x)
  bad <- !is.na(x) & as.numeric(out) != x
  out[bad] <- sprintf("%.17g", x[bad])
  out[is.na(x)] <- "NA"
  out
}

lme4_version <- utils::packageDescription("lme4")$Version

for (name in names(descriptions)) {
  env <- new.env()
  data(list = name, package = "lme4", envir = env)
  d <- as.data.frame(env[[name]])
  rownames(d) <- NULL

  columns <- list()
  out <- d
  for (col in names(d)) {
    x <- d[[col]]
    if (is.ordered(x)) {
      columns[[length(columns) + 1]] <- list(name = col, kind = "ordered",
                                             levels = as.list(levels(x)))
      out[[col]] <- as.character(x)
    } else if (is.factor(x)) {
      columns[[length(columns) + 1]] <- list(name = col, kind = "factor",
                                             levels = as.list(levels(x)))
      out[[col]] <- as.character(x)
    } else if (is.integer(x)) {
      columns[[length(columns) + 1]] <- list(name = col, kind = "integer")
      out[[col]] <- as.character(x)
    } else if (is.numeric(x)) {
      columns[[length(columns) + 1]] <- list(name = col, kind = "numeric")
      out[[col]] <- fmt_num(x)
    } else {
      stop(sprintf("unsupported column type in %s$%s: %s", name, col, class(x)[1]))
    }
  }

  csv_path <- file.path(out_dir, paste0(name, ".csv.gz"))
  con <- gzfile(csv_path, "w")
  ## factor labels are quoted; numbers are plain
  quote_cols <- which(vapply(d, is.factor, logical(1)))
  write.csv(out, con, row.names = FALSE, quote = if (length(quote_cols)) quote_cols else FALSE,
            na = "")
  close(con)

  meta <- list(
    name = name,
    source = sprintf("R package lme4 %s, data(%s), exported with %s",
                     lme4_version, name, R.version.string),
    description = unname(descriptions[[name]]),
    nrow = nrow(d),
    columns = columns
  )
  write_json(meta, file.path(out_dir, paste0(name, ".json")),
             auto_unbox = TRUE, pretty = TRUE, digits = NA)
  cat(sprintf("wrote %s (%d rows, %d columns)\n", csv_path, nrow(d), ncol(d)))
}
