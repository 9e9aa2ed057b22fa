// Where the console keeps the chosen language (shared by the i18n layer and the rule editor's translations).
export const LANG_KEY = 'orderhub.lang';
