#!/usr/bin/env Rscript
## Reference results from R's emmeans (with lme4, lmerTest and pbkrtest behind it) for the cases in
## validation/emmeans_cases.json.
##
## Usage (from the repository root):
##   Rscript validation/run_emmeans.R [--out DIR] [case_id ...]
## Each case writes DIR/<id>.json (default validation/reference_emmeans): the emmeans / emtrends table, the
## contrast table and the joint tests, numbers at full precision (jsonlite digits = NA), with the fitted
## model's theta, fixef and vcov (compare_emmeans.py evaluates sparselmm at those), the R, lme4 and emmeans
## versions. lmer.df is always passed explicitly: emmeans switches to asymptotic df above 3000 rows.
## Non-zero exit if any case failed.
## the helpers shared by the validation scripts, from this script's folder (Rscript names it in --file=)
.script <- sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE))
.here <- if (length(.script)) dirname(gsub("~+~", " ", .script[[1]], fixed = TRUE)) else "validation"
source(file.path(.here, "common.R"))
attach_quietly("lme4", "emmeans", "jsonlite")
args <- script_args(file.path("validation", "reference_emmeans"))
out_dir <- args$out_dir
spec <- fromJSON(file.path("validation", "emmeans_cases.json"), simplifyVector = FALSE)
cases <- select_cases(spec$cases, args$rest)

fits <- list()
fit_model <- function(key) {
  if (!is.null(fits[[key]])) return(fits[[key]])
  md <- spec$models[[key]]
  d <- load_data(md$data)
  for (f in unlist(md$factors)) if (!is.factor(d[[f]])) d[[f]] <- factor(d[[f]])
  if (!is.null(md$exclude)) {
    drop <- rep(TRUE, nrow(d))
    for (v in names(md$exclude)) drop <- drop & as.character(d[[v]]) == md$exclude[[v]]
    d <- droplevels(d[!drop, ])
  }
  formula <- if (is.null(md$r_formula)) md$formula else md$r_formula
  m <- if (md$kind == "glmer") {
    glmer(as.formula(formula), data = d, family = get(md$family)(),
          control = glmerControl(tolPwrss = 1e-12))
  } else {
    lmer(as.formula(formula), data = d, REML = isTRUE(md$reml))
  }
  fits[[key]] <<- m
  m
}

as_table <- function(x) {
  df <- as.data.frame(x)
  for (nm in names(df)) if (is.factor(df[[nm]])) df[[nm]] <- as.character(df[[nm]])
  df
}

failed <- 0
for (cs in cases) {
  res <- tryCatch({
    m <- fit_model(cs$model)
    set.seed(20230217)
    out <- list(id = cs$id, R = R.version.string, lme4 = as.character(packageVersion("lme4")),
                emmeans = as.character(packageVersion("emmeans")),
                fit = list(theta = unname(getME(m, "theta")), fixef = unname(fixef(m)),
                           fixef_names = names(fixef(m)), vcov = unname(as.matrix(vcov(m))),
                           sigma = sigma(m)))
    msgs <- character(0)
    grab <- function(expr) withCallingHandlers(expr,
      message = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleMessage") },
      warning = function(w) { msgs <<- c(msgs, conditionMessage(w)); invokeRestart("muffleWarning") })
    emm <- NULL
    if (!is.null(cs$emmeans)) {
      e <- cs$emmeans
      a <- list(object = m, specs = as.formula(e$specs), lmer.df = cs$ddf)
      if (!is.null(e$at)) a$at <- lapply(e$at, unlist)
      if (!is.null(e$weights)) a$weights <- e$weights
      if (!is.null(e$type)) a$type <- e$type
      emm <- grab(do.call(emmeans, a))
      out$emmeans_table <- as_table(summary(emm))
    }
    if (!is.null(cs$emtrends)) {
      e <- cs$emtrends
      emm <- grab(emtrends(m, as.formula(e$specs), var = e$var, lmer.df = cs$ddf))
      out$emtrends_table <- as_table(summary(emm))
    }
    if (!is.null(cs$contrast)) {
      ct <- cs$contrast
      method <- if (is.list(ct$method)) lapply(ct$method, unlist) else ct$method
      a <- list(object = emm, method = method)
      if (!is.null(ct$adjust)) a$adjust <- ct$adjust
      if (!is.null(ct$ref)) a$ref <- ct$ref
      out$contrast_table <- as_table(summary(grab(do.call(contrast, a))))
    }
    if (!is.null(cs$joint_tests)) {
      a <- list(object = m, lmer.df = cs$ddf)
      if (!is.null(cs$joint_tests$by)) a$by <- cs$joint_tests$by
      out$joint_tests_table <- as_table(grab(do.call(joint_tests, a)))
    }
    out$messages <- unique(msgs)
    write(toJSON(out, digits = NA, auto_unbox = TRUE, null = "null", na = "null", dataframe = "columns"),
          file.path(out_dir, paste0(cs$id, ".json")))
    cat(sprintf("%-34s ok\n", cs$id))
    TRUE
  }, error = function(e) {
    cat(sprintf("%-34s FAILED: %s\n", cs$id, conditionMessage(e)))
    FALSE
  })
  if (!res) failed <- failed + 1
}
if (failed > 0) quit(status = 1)
