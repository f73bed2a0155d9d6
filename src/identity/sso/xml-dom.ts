// XML parsing for SAML checks. @xmldom/xmldom's own typings pull the browser DOM library into the
// whole program (they reference lib="dom"), which clashes with Node's WebCrypto types, so the few
// members used here are typed locally and the module is loaded through require.
import { createRequire } from 'node:module';

export interface XmlElement {
  nodeType: number;
  firstChild: XmlElement | null;
  nextSibling: XmlElement | null;
  textContent: string | null;
  namespaceURI: string | null;
  localName: string;
  getAttribute(name: string): string | null;
  getElementsByTagNameNS(ns: string, name: string): ArrayLike<XmlElement>;
}

interface DomParser { parseFromString(xml: string, mimeType: string): { documentElement: XmlElement | null } }

const { DOMParser } = createRequire(import.meta.url)('@xmldom/xmldom') as { DOMParser: new (options: object) => DomParser };

const quiet = { warning: () => {}, error: () => {}, fatalError: () => {} };

/** The document element, or null when the text is not well-formed XML. */
export function parseXml(xml: string): XmlElement | null {
  try {
    return new DOMParser({ errorHandler: quiet }).parseFromString(xml, 'text/xml').documentElement ?? null;
  } catch {
    return null;
  }
}

/** Element children of `parent` with this namespace and local name. */
export function childElements(parent: XmlElement, ns: string, name: string): XmlElement[] {
  const out: XmlElement[] = [];
  for (let n = parent.firstChild; n; n = n.nextSibling) {
    if (n.nodeType === 1 && n.namespaceURI === ns && n.localName === name) out.push(n);
  }
  return out;
}

export function descendantElements(parent: XmlElement, ns: string, name: string): XmlElement[] {
  return Array.from(parent.getElementsByTagNameNS(ns, name));
}
