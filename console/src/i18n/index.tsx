// The i18n layer: every UI string is a key of the Chinese dictionary; English mirrors its keys
// (the type checker refuses a missing one). Chinese by default, the choice kept in localStorage.
import { createContext, useCallback, useContext, useMemo, useState, type ReactNode } from 'react';
import dayjs from 'dayjs';
import 'dayjs/locale/zh-cn';
import zh from './zh';
import en from './en';
import { LANG_KEY } from './lang';

export type Lang = 'zh' | 'en';
export type MessageKey = keyof typeof zh;
type Vars = Record<string, string | number | null | undefined>;

const DICTIONARIES: Record<Lang, Record<MessageKey, string>> = { zh, en };
export { LANG_KEY };

function initialLang(): Lang {
  const saved = localStorage.getItem(LANG_KEY);
  return saved === 'en' ? 'en' : 'zh';
}

function interpolate(text: string, vars?: Vars): string {
  if (!vars) return text;
  return text.replace(/\{(\w+)\}/g, (_, name) => (vars[name] === undefined || vars[name] === null ? '' : String(vars[name])));
}

export interface I18n {
  lang: Lang;
  setLang: (lang: Lang) => void;
  t: (key: MessageKey, vars?: Vars) => string;
  /** a code from the API (status, hold code, channel …): its label when the dictionary has one, else the code itself */
  label: (prefix: string, code: string | null | undefined) => string;
}

const I18nContext = createContext<I18n | null>(null);

export function I18nProvider({ children }: { children: ReactNode }) {
  const [lang, setLangState] = useState<Lang>(initialLang);
  dayjs.locale(lang === 'zh' ? 'zh-cn' : 'en');
  const setLang = useCallback((next: Lang) => {
    localStorage.setItem(LANG_KEY, next);
    document.documentElement.lang = next === 'zh' ? 'zh-CN' : 'en';
    setLangState(next);
  }, []);
  const value = useMemo<I18n>(() => {
    const dict = DICTIONARIES[lang];
    return {
      lang,
      setLang,
      t: (key, vars) => interpolate(dict[key] ?? key, vars),
      label: (prefix, code) => {
        if (code === null || code === undefined || code === '') return '';
        const text = (dict as Record<string, string>)[`${prefix}.${code}`];
        return text ?? code;
      },
    };
  }, [lang, setLang]);
  return <I18nContext.Provider value={value}>{children}</I18nContext.Provider>;
}

export function useI18n(): I18n {
  const ctx = useContext(I18nContext);
  if (!ctx) throw new Error('useI18n outside I18nProvider');
  return ctx;
}
