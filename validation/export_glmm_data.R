#!/usr/bin/env Rscript
## Export lme4's cbpp, VerbAgg and grouseticks as CSV for the GLMM validation (validation/data/glmm_*.csv).
## Provenance: R package lme4 (data(cbpp), data(VerbAgg), data(grouseticks)); versions printed below.
suppressPackageStartupMessages(library(lme4))
cat("R", R.version$major, R.version$minor, "lme4", as.character(packageVersion("lme4")), "\n")
data(cbpp, package = "lme4")
write.csv(cbpp, "validation/data/glmm_cbpp.csv", row.names = FALSE)
data(VerbAgg, package = "lme4")
v <- VerbAgg[, c("Anger", "Gender", "item", "resp", "id", "btype", "situ", "mode", "r2")]
v$r2 <- as.integer(v$r2 == "Y")
v$resp <- as.character(v$resp)
write.csv(v, "validation/data/glmm_VerbAgg.csv", row.names = FALSE)
data(grouseticks, package = "lme4")
g <- grouseticks
g$cHEIGHT <- as.numeric(scale(g$HEIGHT, center = TRUE, scale = TRUE))  # as in ?grouseticks
write.csv(g, "validation/data/glmm_grouseticks.csv", row.names = FALSE)
