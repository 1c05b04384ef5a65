## Helpers shared by the validation scripts (run_lme4.R, run_lmertest.R, run_lme4_ci.R, run_glmer.R,
## run_emmeans.R, export_glmm_data.R): the command line, the cases to run, the data, fitting a case with
## lmer, the JSON shapes of vectors and matrices, and the loop over the cases.
##
## Each script sources this file from its own folder, which Rscript names in its --file= argument, so it
## is found however Rscript is called; the scripts themselves still run from the repository root (the
## paths in the case files are relative to it).

## attach packages without their start-up messages, in the order given
attach_quietly <- function(...) {
  for (pkg in c(...)) suppressPackageStartupMessages(library(pkg, character.only = TRUE))
}

## the command line: --out DIR (or --out=DIR; default `default_out`, created), the flags named by `flags`
## (c(name = "--flag"); each TRUE when given), and the other arguments (case ids, section names) in order
script_args <- function(default_out, flags = character(0), args = commandArgs(trailingOnly = TRUE)) {
  out <- list(out_dir = default_out, rest = character(0))
  for (nm in names(flags)) out[[nm]] <- FALSE
  i <- 1
  while (i <= length(args)) {
    a <- args[[i]]
    if (a == "--out") {
      if (i == length(args)) stop("--out needs a directory")
      out$out_dir <- args[[i + 1]]
      i <- i + 1
    } else if (startsWith(a, "--out=")) {
      out$out_dir <- sub("^--out=", "", a)
    } else if (a %in% flags) {
      out[[names(flags)[flags == a]]] <- TRUE
    } else {
      out$rest <- c(out$rest, a)
    }
    i <- i + 1
  }
  dir.create(out$out_dir, showWarnings = FALSE, recursive = TRUE)
  out
}

## the cases named by `ids` (an unknown id is an error), or all of them (less those marked "slow")
select_cases <- function(cases, ids, skip_slow = FALSE) {
  all_ids <- vapply(cases, function(cs) cs$id, character(1))
  if (length(ids)) {
    unknown <- setdiff(ids, all_ids)
    if (length(unknown)) stop("unknown case id(s): ", paste(unknown, collapse = ", "))
    return(cases[all_ids %in% ids])
  }
  if (skip_slow) Filter(function(cs) !isTRUE(cs$slow), cases) else cases
}

## a case's data: "dataset:NAME" (lme4's bundled data) or "csv:PATH" (factors for the text columns)
load_data <- function(spec) {
  if (startsWith(spec, "dataset:")) {
    name <- sub("^dataset:", "", spec)
    env <- new.env()
    data(list = name, package = "lme4", envir = env)
    as.data.frame(env[[name]])
  } else if (startsWith(spec, "csv:")) {
    read.csv(sub("^csv:", "", spec), stringsAsFactors = TRUE)
  } else {
    stop("bad data spec: ", spec)
  }
}

## `lmer` (lme4's, or lmerTest's) on a case's formula, REML flag, weights and offset (column names or
## NULL), with the further arguments `...`. lmer evaluates weights= and offset= in `data` first and then
## in the formula's environment (this function's; refits by update(), drop1 and ranova evaluate the
## call there too), so the local names must not clash with column names such as "w" or "off"
lmer_case <- function(cs, data, lmer = lme4::lmer, ...) {
  ..case_weights.. <- if (is.null(cs$weights)) NULL else data[[cs$weights]]
  ..case_offset.. <- if (is.null(cs$offset)) NULL else data[[cs$offset]]
  if (!is.null(cs$weights) && is.null(..case_weights..)) stop("no weights column ", cs$weights)
  if (!is.null(cs$offset) && is.null(..case_offset..)) stop("no offset column ", cs$offset)
  if (any(c("..case_weights..", "..case_offset..") %in% names(data))) stop("reserved column name")
  form <- as.formula(cs$formula, env = environment())
  lmer(form, data = data, REML = isTRUE(cs$reml), weights = ..case_weights.., offset = ..case_offset.., ...)
}

## a vector as a JSON array (I() keeps length 1 as an array); a matrix as a row-major list of rows
vec <- function(x) I(unname(as.numeric(x)))
rows_of <- function(M) {
  M <- as.matrix(M)
  lapply(seq_len(nrow(M)), function(r) I(unname(as.numeric(M[r, ]))))
}

## run_case(cs) for every case: write out_dir/<id>.json and print the line report(result, seconds) gives
## (a string; with attr "failed" TRUE the case counts as failed, its JSON written all the same). A case
## whose run_case fails is reported and the others still run; the exit status is 1 if any case failed
run_cases <- function(cases, run_case, out_dir, report) {
  failed <- character(0)
  for (cs in cases) {
    t0 <- Sys.time()
    res <- tryCatch(run_case(cs), error = function(e) e)
    if (inherits(res, "error")) {
      failed <- c(failed, cs$id)
      cat(sprintf("FAILED %s: %s\n", cs$id, conditionMessage(res)))
      next
    }
    path <- file.path(out_dir, paste0(cs$id, ".json"))
    jsonlite::write_json(res, path, digits = NA, auto_unbox = TRUE, pretty = TRUE, na = "null", null = "null")
    line <- report(res, as.numeric(difftime(Sys.time(), t0, units = "secs")))
    if (isTRUE(attr(line, "failed"))) failed <- c(failed, cs$id)
    cat(line, "\n", sep = "")
  }
  if (length(failed)) {
    cat(sprintf("%d case(s) failed: %s\n", length(failed), paste(failed, collapse = ", ")))
    quit(status = 1)
  }
  cat(sprintf("all %d case(s) ok\n", length(cases)))
}

## ---- glmer cases (run_glmer_inference.R) ----------------------------------------------------------
## a GLMM case's data (validation/glmm_cases.json's shape): the CSV, with the columns in cs$factors as factors
glmm_data <- function(cs) {
  d <- read.csv(cs$data, stringsAsFactors = TRUE)
  for (f in unlist(cs$factors)) d[[f]] <- factor(d[[f]])
  d
}

## a GLMM case's family object (cs$family, cs$link; cs$theta for MASS's negative binomial)
glmm_family <- function(cs) {
  link <- if (is.null(cs$link)) NULL else cs$link
  switch(cs$family,
    binomial = if (is.null(link)) binomial() else binomial(link = link),
    poisson = if (is.null(link)) poisson() else poisson(link = link),
    negative.binomial = MASS::negative.binomial(theta = cs$theta, link = if (is.null(link)) "log" else link),
    Gamma = if (is.null(link)) Gamma() else Gamma(link = link),
    inverse.gaussian = if (is.null(link)) inverse.gaussian() else inverse.gaussian(link = link),
    stop("unknown family ", cs$family))
}

## `glmer` on a case's formula (or `formula`, e.g. a reduced model), family, nAGQ, weights and offset, with
## `control`. As lmer_case: glmer records its call with these local names and update() (drop1, bootMer's
## refits) evaluates it in the formula's environment (this function's), so the names must not clash with
## the data's columns
glmer_case <- function(cs, data, formula = cs$formula, control = lme4::glmerControl()) {
  ..case_weights.. <- if (is.null(cs$weights)) NULL else data[[cs$weights]]
  ..case_offset.. <- if (is.null(cs$offset)) NULL else data[[cs$offset]]
  if (!is.null(cs$weights) && is.null(..case_weights..)) stop("no weights column ", cs$weights)
  if (!is.null(cs$offset) && is.null(..case_offset..)) stop("no offset column ", cs$offset)
  reserved <- c("..case_weights..", "..case_offset..", "..case_family..", "..case_nagq..", "..case_control..")
  if (any(reserved %in% names(data))) stop("reserved column name")
  ..case_family.. <- glmm_family(cs)
  ..case_nagq.. <- if (is.null(cs$nAGQ)) 1L else as.integer(cs$nAGQ)
  ..case_control.. <- control
  form <- as.formula(formula, env = environment())
  lme4::glmer(form, data = data, family = ..case_family.., nAGQ = ..case_nagq.., weights = ..case_weights..,
              offset = ..case_offset.., control = ..case_control..)
}
