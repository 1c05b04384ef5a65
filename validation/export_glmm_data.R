#!/usr/bin/env Rscript
## Export lme4's cbpp, VerbAgg and grouseticks as CSV for the GLMM validation (validation/data/glmm_*.csv).
## Provenance: R package lme4 (data(cbpp), data(VerbAgg), data(grouseticks)); versions printed below.
##
## Usage (from the repository root): Rscript validation/export_glmm_data.R [--out DIR]  (default validation/data)

## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4")
out_dir <- script_args(file.path("validation", "data"))$out_dir
cat("R", R.version$major, R.version$minor, "lme4", as.character(packageVersion("lme4")), "\n")
data(cbpp, package = "lme4")
write.csv(cbpp, file.path(out_dir, "glmm_cbpp.csv"), row.names = FALSE)
data(VerbAgg, package = "lme4")
v <- VerbAgg[, c("Anger", "Gender", "item", "resp", "id", "btype", "situ", "mode", "r2")]
v$r2 <- as.integer(v$r2 == "Y")
v$resp <- as.character(v$resp)
write.csv(v, file.path(out_dir, "glmm_VerbAgg.csv"), row.names = FALSE)
data(grouseticks, package = "lme4")
g <- grouseticks
g$cHEIGHT <- as.numeric(scale(g$HEIGHT, center = TRUE, scale = TRUE))  # as in ?grouseticks
write.csv(g, file.path(out_dir, "glmm_grouseticks.csv"), row.names = FALSE)
